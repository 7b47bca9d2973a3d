# Prepare each task's data once (generate, or read the real files); every training
# job of that task reads it.
rule prepare_data:
    output:
        f"{OUT}/data/{NAME}/{{task}}/prepared.json",
    log:
        f"{OUT}/logs/{NAME}/prepare/{{task}}.log",
    params:
        profile=PROFILE_FILE,
        data_hash=lambda wc: data_config_hash(PROFILE, wc.task),
    shell:
        "attnbench prepare --profile {params.profile} --task {wildcards.task}"
        " --out $(dirname {output}) > {log} 2>&1"
