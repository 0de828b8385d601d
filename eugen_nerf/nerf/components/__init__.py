"""Parts of the methods that are neither fields nor models: encodings, contraction, multisampling, hash grid,
samplers and losses."""
