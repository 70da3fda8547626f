"""What the CLI prints for people (the `--json` forms print results as they are)."""

from __future__ import annotations

from typing import Any, Optional


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)



def print_train_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    reused = " (identical model already stored: reused)" if result["reused"] else ""
    console.print(f"[bold green]model {result['model']} version {result['version']}[/]{reused}")
    console.print(f"stored at {result['uri']} (model card: model_card.md)")
    inferred = "inferred: " if result["task_inferred"] else ""
    console.print(f"task: {result['task']} ({inferred}{result['task_reason']})")
    rows = result["rows"]
    console.print(f"rows train/valid/test: {rows['train']}/{rows['valid']}/{rows['test']}; "
                  f"dropped for a null target: {result['dropped_null_target']}")
    if result.get("contract_violations"):
        console.print(f"[bold yellow]warning:[/] {result['contract_violations']} data-contract violation(s) "
                      "accepted (validation.mode: warn); see the validation report")
    for dropped in result.get("dropped_features", []):
        console.print(f"not a feature: {dropped['column']} ({dropped['reason']})")
    table = Table(title="holdout metrics")
    for column in ("metric", "model", "trivial baseline"):
        table.add_column(column)
    for name, value in result["metrics"].items():
        table.add_row(name, _fmt(value), _fmt(result["baseline_metrics"][name]))
    console.print(table)
    print_tuning_line(console, result.get("tuning"))
    stages = ", ".join(f"{n} " + ("cached" if s["cached"] else f"{s['seconds']:.2f}s")
                       for n, s in result["stages"].items())
    console.print(f"stages: {stages}")
    print_promotion(console, result)



def print_promotion(console: Any, result: dict[str, Any]) -> None:
    promotion = result.get("promotion")
    if not promotion:
        return
    colour = "green" if promotion.get("moved") else "yellow"
    console.print(f"[bold {colour}]{promotion['reason']}[/]")
    if result.get("drift_large_shifts"):
        console.print(f"[bold yellow]data drift:[/] large shift against the champion's training data in "
                      f"{', '.join(result['drift_large_shifts'])} (see the model card)")



def print_tuning_line(console: Any, tuning: Optional[dict[str, Any]]) -> None:
    if not tuning or not tuning.get("performed"):
        return
    counts = tuning["counts"]
    console.print(f"tuning: study {tuning['study_name']} ({tuning['storage']}): {counts['complete']} complete, "
                  f"{counts['pruned']} pruned, {counts['fail']} failed; best {tuning['metric']} "
                  f"{tuning['best_value']:.6g} (trial {tuning['best_trial']})"
                  + (" - stopped by the timeout" if tuning["stopped_by"] == "timeout" else ""))



def print_model_list(rows: list[dict[str, Any]], artifacts: str) -> None:
    """One line per model: versions, champion, latest headline metric."""
    if not rows:
        print(f"no models in {artifacts}")
    for row in rows:
        champion = f"champion v{row['champion']}" if row["champion"] else "no champion"
        print(f"{row['model']}: {row['versions']} version(s), latest v{row['latest']}, {champion} "
              f"({row['task']}, latest {row['metric']}={_fmt(row['value'])}, {row['created_at']})")


def print_version(manifest: dict[str, Any], versions: list[int]) -> None:
    """What a version is: where, when, by whom, on which data and code, and its metrics."""
    from trainpipe.metrics import METRICS

    print(f"{manifest['model']} v{manifest['version']}  (versions: {', '.join(map(str, versions))})")
    print(f"  uri: {manifest['uri']}")
    print(f"  created: {manifest['created_at']} by {manifest['created_by']}; "
          f"Prefect run {manifest['prefect']['flow_run_id']}")
    print(f"  task: {manifest['task']}, target {manifest['target']!r}")
    print(f"  data: fingerprint {manifest['data']['fingerprint'][:16]}, {len(manifest['data']['sources'])} file(s)")
    print(f"  code: {manifest['code']['git_commit'] or 'no git'}, source {manifest['code']['source_sha256'][:16]}")
    for metric in METRICS[manifest["task"]]:
        headline = "  <- headline" if metric == manifest["headline_metric"] else ""
        print(f"  {metric}: {_fmt(manifest['metrics'][metric])} "
              f"(baseline {_fmt(manifest['baseline_metrics'][metric])}){headline}")
    print(f"  model card: {manifest['uri']}/model_card.md (plots: model_card.html)")


def print_registry_state(aliases: dict[str, int], version: int, manifest: dict[str, Any],
                         moves: list[dict[str, Any]]) -> None:
    """Champion, aliases, this version's gate verdict and the latest alias moves."""
    champion = aliases.get("champion")
    others = ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items()) if a != "champion")
    print(f"  champion: {'v' + str(champion) if champion else 'none'}"
          f"{' (this version)' if champion == version else ''}{'; aliases: ' + others if others else ''}")
    verdict = manifest.get("promotion")
    if verdict:
        print(f"  gate at training: {verdict['reason']}")
    for move in moves[-5:]:
        came = f"v{move['from_version']}" if move.get("from_version") else "none"
        print(f"  {move['at']} {move['alias']}: {came} -> v{move['version']} ({move.get('kind')}) by {move['by']}: "
              f"{move.get('reason') or ''}")
