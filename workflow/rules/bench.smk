# Efficiency sweep (attnbench.bench): one job per variant (one job for all of them under
# group_tasks) measures time, memory and TFLOP/s versus sequence length on this machine
# (the profile's bench.cpu or bench.cuda grid), then bench_summary builds the tables and
# plots from the records alone.
# Timings are only as clean as the machine: run with few parallel jobs for final numbers.
from attnbench.bench import bench_job_config

BENCH_DIR = f"{OUT}/bench/{NAME}"


# One job per variant, or under group_tasks one process measures every variant in turn
# (one start-up instead of one per variant; a changed bench config of any variant then
# reruns the whole sweep). Both groupings are this one `bench` rule (with their command
# templates and params unchanged, as in train.smk).
if GROUPED:
    BENCH_VARIANTS = VARIANTS  # the variants of one job (as path patterns)
    BENCH_JOB = "all"  # a job's key: the name of its log
    BENCH_PARAMS = {"variants": " ".join(VARIANTS)}
    BENCH_ARGS = "--variant {params.variants}"  # each record to its default path
else:
    BENCH_VARIANTS = ["{variant}"]
    BENCH_JOB = "{variant}"
    BENCH_PARAMS = {}
    BENCH_ARGS = "--variant {wildcards.variant} --out {output}"


def bench_cfg_hash(wildcards):
    """Reruns a job when, and only when, the resolved bench config of its variant (of any
    variant, under group_tasks) changes."""
    if GROUPED:
        return {v: config_hash(bench_job_config(PROFILE, v)) for v in VARIANTS}
    return config_hash(bench_job_config(PROFILE, wildcards.variant))


rule bench:
    output:
        [f"{BENCH_DIR}/records/{v}.json" for v in BENCH_VARIANTS],
    log:
        f"{OUT}/logs/{NAME}/bench/{BENCH_JOB}.log",
    threads: PROFILE["threads"]
    resources:
        gpu=GPUS_PER_JOB,
    params:
        **BENCH_PARAMS,
        profile=PROFILE_FILE,
        cfg_hash=bench_cfg_hash,
    shell:
        "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
        f" attnbench bench --profile {{params.profile}} {BENCH_ARGS} --threads {{threads}}"
        " > {log} 2>&1"


rule bench_summary:
    input:
        expand(f"{BENCH_DIR}/records/{{variant}}.json", variant=VARIANTS),
    output:
        md=f"{BENCH_DIR}/summary.md",
        points=f"{BENCH_DIR}/points.csv",
        scaling=f"{BENCH_DIR}/scaling.csv",
        relative_md=f"{BENCH_DIR}/relative.md",
        relative_csv=f"{BENCH_DIR}/relative.csv",
        plots=directory(f"{BENCH_DIR}/plots"),
    log:
        f"{OUT}/logs/{NAME}/bench_summary.log",
    params:
        profile=PROFILE_FILE,
    shell:
        "attnbench bench-summary --profile {params.profile} --records {input}"
        " --out-dir $(dirname {output.md}) > {log} 2>&1"
