"""The pipeline's steps: one module per Snakemake rule and CLI command, each with one function
of the same name, files in and files out (``n2sr.steps.ingest.ingest``, ...)."""
