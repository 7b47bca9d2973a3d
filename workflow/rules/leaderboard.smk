# Collect every run record of the profile into the leaderboard: Markdown, tidy CSV,
# self-contained HTML, figures and the reproducibility manifest. The head-ablation
# outputs are inputs so that their heat maps are drawn too. `snakemake --report
# report.html` embeds the outputs marked with report() below, with their captions.
# The sweep's records are inputs too, not only its summary: a fresh clone has the
# committed summary but no records, and the sweep must then run again.
rule leaderboard:
    input:
        records=ALL_RECORDS,
        ablations=HEAD_ABLATIONS,
        bench=rules.bench_summary.output.md,
        bench_records=rules.bench_summary.input,
    output:
        md=report(
            f"{OUT}/leaderboard.md",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        csv=f"{OUT}/leaderboard.csv",
        html=report(
            f"{OUT}/leaderboard.html",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        manifest=f"{OUT}/manifest.json",
        plots=report(
            directory(f"{OUT}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Figures",
        ),
    log:
        f"{OUT}/logs/{NAME}/leaderboard.log",
    params:
        analysis=f"{OUT}/analysis/{NAME}",
    shell:
        "attnbench leaderboard --records {input.records} --md {output.md}"
        " --csv {output.csv} --html {output.html} --manifest {output.manifest}"
        " --plots {output.plots} --analysis {params.analysis}"
        " --bench $(dirname {input.bench}) > {log} 2>&1"
