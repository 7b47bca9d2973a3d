# One training job per (task, variant, seed). A pair the variant cannot run
# (e.g. a non-causal variant on language modelling) writes an `n/a` record with the
# reason (--na-ok), so it shows on the leaderboard instead of going missing. A run
# that raises writes a `failed` record (--record-failures) and the suite goes on; bad
# input (a profile or data that cannot run) still fails the job. A job killed at any
# moment resumes from seed<S>.resume.pt when the workflow runs again.
if not PROFILE["group_tasks"]:

    rule train:
        input:
            data=lambda wc: data_marker(wc.task),
        output:
            f"{OUT}/runs/{NAME}/{{task}}/{{variant}}/seed{{seed}}.json",
        log:
            f"{OUT}/logs/{NAME}/train/{{task}}/{{variant}}/seed{{seed}}.log",
        threads: PROFILE["threads"]
        resources:
            gpu=TRAIN_GPUS,
        params:
            profile=PROFILE_FILE,
            # reruns the job when, and only when, its own resolved config changes
            cfg_hash=lambda wc: config_hash(job_config(PROFILE, wc.task, wc.variant)),
        shell:
            "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
            " " + TRAIN_CMD + " --profile {params.profile} --task {wildcards.task}"
            " --variant {wildcards.variant} --seed {wildcards.seed}"
            " --data $(dirname {input.data}) --out {output} --threads {threads}"
            " --na-ok --record-failures --no-progress > {log} 2>&1"

else:

    # group_tasks: one job per (variant, seed) trains every task in one process, so the
    # interpreter and PyTorch start-up is paid once per variant instead of once per task.
    rule train_group:
        input:
            data=[data_marker(t) for t in TASKS],
        output:
            [f"{OUT}/runs/{NAME}/{t}/{{variant}}/seed{{seed}}.json" for t in TASKS],
        log:
            f"{OUT}/logs/{NAME}/train/{{variant}}/seed{{seed}}.log",
        threads: PROFILE["threads"]
        resources:
            gpu=TRAIN_GPUS,
        params:
            profile=PROFILE_FILE,
            tasks=",".join(TASKS),
            # reruns the group when the resolved config of any of its jobs changes
            cfg_hash=lambda wc: {
                t: config_hash(job_config(PROFILE, t, wc.variant)) for t in TASKS
            },
        shell:
            "python -m attnbench.gpu_slots --gpus {resources.gpu} --"
            " " + TRAIN_CMD + " --profile {params.profile} --task {params.tasks}"
            " --variant {wildcards.variant} --seed {wildcards.seed} --threads {threads}"
            " --na-ok --record-failures --no-progress > {log} 2>&1"
