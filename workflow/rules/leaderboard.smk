# Collect every run record of the profile into the leaderboard (Markdown + CSV).
rule leaderboard:
    input:
        ALL_RECORDS,
    output:
        md=f"{OUT}/leaderboard.md",
        csv=f"{OUT}/leaderboard.csv",
    log:
        f"{OUT}/logs/{NAME}/leaderboard.log",
    shell:
        "attnbench leaderboard --records {input} --md {output.md} --csv {output.csv} > {log} 2>&1"
