"""The last part of `eugen distill`'s report: the student against its teacher on the test split, and both
timed side by side (`eugen bench nerf`'s measurement), each loaded from its run folder as a user would."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from eugen_nerf.bench.timing import load_verdict, noisy_mark
from eugen_nerf.errors import error_summary
from eugen_nerf.nerf.engine.runs import load_pipeline

METRICS = ("test_psnr", "test_ssim", "test_lpips")
TIMED_POINTS = 65_536  # as eugen bench nerf times the MLPs


def evaluate_student(teacher_config: Path, student_config: Path, test_views: int | None, repeats: int,
                     console: Console) -> dict:
    """compare_with_teacher, printed; a failure is reported, not raised: the student run is written by then."""
    try:
        report = compare_with_teacher(teacher_config, student_config, test_views, repeats)
    except Exception as error:  # noqa: BLE001 - the distillation succeeded; only its report is missing
        said = error_summary(error)
        console.print(f"[yellow]the student run is written ({student_config}), but its evaluation failed: {said}; "
                      "ns-eval and eugen bench nerf can score and time it[/yellow]")
        return {"error": said}
    print_comparison(report, console)
    return report


def compare_with_teacher(teacher_config: Path, student_config: Path, test_views: int | None, repeats: int) -> dict:
    """Test-split metrics of both runs and their speed (the teacher as the baseline), with the machine's
    measured load while timing."""
    from eugen_nerf.bench.nerf import compare_pipelines
    from eugen_nerf.bench.quality import evaluate_pipeline

    pipelines = {"teacher": load_pipeline(teacher_config, "--load-config", test_mode="test")[0],
                 "student": load_pipeline(student_config, "the student run", test_mode="test")[0]}
    quality = {name: evaluate_pipeline(pipeline, test_views) for name, pipeline in pipelines.items()}
    speed = compare_pipelines(pipelines, TIMED_POINTS, repeats, images=1)
    report: dict = {"test_views": quality["teacher"]["test_views"], "points": TIMED_POINTS, "repeats": repeats}
    for name in pipelines:
        timed = speed["models"][name]
        report[name] = {**{metric: quality[name][metric] for metric in METRICS},
                        "parameters": timed["parameters"], "mlp_ms": timed["mlp_ms"], "image_ms": timed["image_ms"]}
    report["psnr_difference"] = report["student"]["test_psnr"] - report["teacher"]["test_psnr"]
    report["speedup"] = {kind: speed["speedup"]["student"][kind] for kind in ("mlp", "image")}
    report["machine_load"], report["noisy"] = speed["machine_load"], speed["noisy"]
    return report


def print_comparison(report: dict, console: Console) -> None:
    table = Table(title=f"student against teacher: {report['test_views']} test views, timed side by side")
    for column in ("run", "test PSNR", "SSIM", "parameters", "MLP ms", "image ms"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name in ("teacher", "student"):
        row = report[name]
        ssim = "-" if row["test_ssim"] is None else f"{row['test_ssim']:.3f}"
        table.add_row(name, f"{row['test_psnr']:.2f} dB", ssim, f"{row['parameters']:,}", f"{row['mlp_ms']:.1f}",
                      f"{row['image_ms']:.0f}")
    console.print(table)
    console.print(f"student - teacher: {report['psnr_difference']:+.2f} dB; speed-up: MLPs "
                  f"{report['speedup']['mlp']:.2f}x, image {report['speedup']['image']:.2f}x"
                  f"{noisy_mark(report['noisy'])}")
    console.print(load_verdict(report["machine_load"], report["noisy"]))
