# attnbench: train every registered attention variant on every task of a profile,
# then build the leaderboard.
#
#   snakemake --cores all                                    # default profile (config/default.yaml)
#   snakemake --cores all --configfile config/<profile>.yaml # another profile
#   snakemake -n                                             # show what would run
#
# Variants and tasks come from the attnbench registries: a new module in
# src/attnbench/variants/ appears here with no edit to this file.
from snakemake.utils import min_version

min_version("8.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/leaderboard.smk"


# The run records and the sweep's records are targets of their own: Snakemake does not
# rerun a job for a missing input when the job's outputs exist, so a record deleted (or a
# profile whose output_dir already holds a leaderboard) would otherwise run nothing.
rule all:
    default_target: True
    input:
        rules.leaderboard.output,
        ALL_RECORDS,
        rules.bench_summary.input,
        HEAD_ABLATIONS,
