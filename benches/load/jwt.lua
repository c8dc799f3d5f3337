-- wrk script of the "jwt" scenarios: each request carries the next of the valid JWT access
-- tokens in the file TOKENS names (one a line, minted by scripts/bench-jwt.sh), in turn.
-- Usage: TOKENS=tokens.txt wrk -s jwt.lua URL

function init(args)
  tokens = {}
  for line in io.lines(os.getenv("TOKENS")) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  counter = math.random(#tokens)
end

function request()
  counter = counter % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = tokens[counter] })
end
