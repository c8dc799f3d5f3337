//! What the configuration reads besides itself: paths anchored at its folder, secrets from a
//! file or an environment variable, CA files. Shared by every section that names one.

use std::path::{Path, PathBuf};

use super::Bad;

/// A path from the file, anchored at the configuration file's folder when relative.
pub(super) fn relative_to(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// Every file the configuration names (`FileConfig::named_files`), anchored like the fields,
/// each once.
pub(super) fn anchored<'a>(
    files: impl IntoIterator<Item = &'a Path>,
    base: Option<&Path>,
) -> Vec<PathBuf> {
    let mut named = Vec::new();
    for p in files {
        let p = relative_to(base, p);
        if !named.contains(&p) {
            named.push(p);
        }
    }
    named
}

/// A secret read from a file or an environment variable (exactly one of them); the field it
/// came from, and its text.
pub(super) fn secret(
    (file, file_field): (&Option<PathBuf>, &'static str),
    (env, env_field): (&Option<String>, &'static str),
    base: Option<&Path>,
    missing: &str,
) -> Result<(&'static str, String), Bad> {
    match (file, env) {
        (Some(_), Some(_)) => Err((
            file_field.into(),
            format!("give {file_field} or {env_field}, not both"),
        )),
        (None, None) => Err((file_field.into(), missing.into())),
        (Some(f), None) => {
            let f = relative_to(base, f);
            std::fs::read_to_string(&f)
                .map(|text| (file_field, text))
                .map_err(|e| {
                    (
                        file_field.to_string(),
                        format!("cannot read `{}`: {e}", f.display()),
                    )
                })
        }
        (None, Some(v)) => std::env::var(v).map(|text| (env_field, text)).map_err(|_| {
            (
                env_field.to_string(),
                format!("environment variable `{v}` is not set"),
            )
        }),
    }
}

/// A section's `ca_file`, anchored and checked: for an `https://` URL only (`what` names it).
pub(super) fn https_ca_file(
    ca_file: Option<&Path>,
    tls: bool,
    base: Option<&Path>,
    what: &str,
) -> Result<Option<PathBuf>, Bad> {
    match ca_file {
        None => Ok(None),
        Some(_) if !tls => Err((
            "ca_file".into(),
            format!("only applies to an https:// {what}"),
        )),
        Some(p) => {
            let p = relative_to(base, p);
            check_ca_file(&p).map_err(|why| ("ca_file".to_string(), why))?;
            Ok(Some(p))
        }
    }
}

/// A PEM file holding at least one certificate (the resolver's and Redis' CA files, read
/// again where they are used).
pub(super) fn check_ca_file(p: &Path) -> Result<(), String> {
    read_ca_ders(p).map(drop)
}

/// The DER certificates of a PEM file.
pub(super) fn read_ca_ders(p: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut &bytes[..])
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM file: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", p.display()));
    }
    Ok(certs)
}
