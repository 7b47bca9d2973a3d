# Training. A job trains one variant with one seed on its tasks: one task per job (the
# {task} wildcard), or under group_tasks every task of the profile in one process, so the
# interpreter and PyTorch start-up is paid once per (variant, seed) instead of once per
# task (a changed config of any of its tasks then reruns the whole group). Both groupings
# are this one `train` rule; only the pieces below differ. Each grouping keeps its log
# names, command template and params as they were when it had a rule of its own: Snakemake
# reruns a finished job whose recorded command or params change.
#
# A pair the variant cannot run (e.g. a non-causal variant on language modelling) writes
# an `n/a` record with the reason (--na-ok), so it shows on the leaderboard instead of
# going missing. A run that raises writes a `failed` record (--record-failures) and the
# suite goes on; bad input (a profile or data that cannot run) still fails the job. A job
# killed at any moment resumes from seed<S>.resume.pt when the workflow runs again.
if GROUPED:
    TRAIN_TASKS = TASKS  # the tasks of one job (as path patterns)
    TRAIN_JOB = "{variant}/seed{seed}"  # a job's key: the name of its log
    TRAIN_PARAMS = {"tasks": ",".join(TASKS)}
    # several tasks: the records and data go to their default paths (the same as below)
    TRAIN_ARGS = (
        "--task {params.tasks} --variant {wildcards.variant} --seed {wildcards.seed}"
    )
else:
    TRAIN_TASKS = ["{task}"]
    TRAIN_JOB = "{task}/{variant}/seed{seed}"
    TRAIN_PARAMS = {}
    TRAIN_ARGS = (
        "--task {wildcards.task} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --data $(dirname {input.data}) --out {output}"
    )


def train_cfg_hash(wildcards):
    """Reruns a job when, and only when, the resolved config of its task (of any of its
    tasks, under group_tasks) changes."""
    if GROUPED:
        return {
            t: config_hash(job_config(PROFILE, t, wildcards.variant)) for t in TASKS
        }
    return config_hash(job_config(PROFILE, wildcards.task, wildcards.variant))


rule train:
    input:
        data=[data_marker(t) for t in TRAIN_TASKS],
    output:
        [run_record(t, "{variant}", "{seed}") for t in TRAIN_TASKS],
    log:
        f"{OUT}/logs/{NAME}/train/{TRAIN_JOB}.log",
    threads: PROFILE["threads"]
    resources:
        gpu=TRAIN_GPUS,
    params:
        **TRAIN_PARAMS,
        profile=PROFILE_FILE,
        cfg_hash=train_cfg_hash,
    shell:
        "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
        f" {TRAIN_CMD} --profile {{params.profile}} {TRAIN_ARGS} --threads {{threads}}"
        " --na-ok --record-failures --no-progress > {log} 2>&1"
