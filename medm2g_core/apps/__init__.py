"""Applications: the pipelines behind the user commands (demo page, synthetic corpora, run records), built on the
engine and callable without the command line."""
