# Efficiency sweep (attnbench.bench): one job per variant (one job for all of them under
# group_tasks) measures time, memory and TFLOP/s versus sequence length on this machine
# (the profile's bench.cpu or bench.cuda grid), then bench_summary builds the tables and
# plots from the records alone.
# Timings are only as clean as the machine: run with few parallel jobs for final numbers.
from attnbench.bench import bench_job_config

BENCH_DIR = f"{OUT}/bench/{NAME}"


if not PROFILE["group_tasks"]:

    rule bench:
        output:
            f"{BENCH_DIR}/records/{{variant}}.json",
        log:
            f"{OUT}/logs/{NAME}/bench/{{variant}}.log",
        threads: PROFILE["threads"]
        resources:
            gpu=GPUS_PER_JOB,
        params:
            profile=PROFILE_FILE,
            # reruns the job when, and only when, its own resolved bench config changes
            cfg_hash=lambda wc: config_hash(bench_job_config(PROFILE, wc.variant)),
        shell:
            "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
            " attnbench bench --profile {params.profile} --variant {wildcards.variant}"
            " --out {output} --threads {threads} > {log} 2>&1"

else:

    # group_tasks: one process measures every variant in turn (one start-up instead of one
    # per variant); a changed bench config of any variant reruns the whole sweep.
    rule bench_group:
        output:
            expand(f"{BENCH_DIR}/records/{{variant}}.json", variant=VARIANTS),
        log:
            f"{OUT}/logs/{NAME}/bench/all.log",
        threads: PROFILE["threads"]
        resources:
            gpu=GPUS_PER_JOB,
        params:
            profile=PROFILE_FILE,
            variants=" ".join(VARIANTS),
            cfg_hash={v: config_hash(bench_job_config(PROFILE, v)) for v in VARIANTS},
        shell:
            "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
            " attnbench bench --profile {params.profile} --variant {params.variants}"
            " --threads {threads} > {log} 2>&1"


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
