# Entry point for `snakemake` run from the repository root; the workflow lives in workflow/.
from snakemake.utils import min_version

min_version("9.0")

# The `include:` keyword would drop the included file's default target (rule all);
# this is the call it compiles to, keeping it.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
