"""keel router: train the learned router on your own labels; explain a decision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import ConfigOption, JsonOption, console, make_app, print_json

router_app = typer.Typer(help="Train and inspect the router.", no_args_is_help=True)


@router_app.command("train")
def train_cmd(
    labels: Annotated[Path | None, typer.Option("--labels", help="JSONL of {text, label} (chat|kb|agent)")] = None,
    only: Annotated[bool, typer.Option("--only", help="train on your labels alone, not with the bundled set")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retrain the classifier (bundled labels + yours) and save it under the data directory."""
    from ..router import bundled_examples, load_examples, train

    settings = make_app(config).settings
    examples = (load_examples(labels) if labels else []) + ([] if only and labels else bundled_examples())
    _, report = train(examples, save_to=settings.router_model)
    if as_json:
        print_json(report.__dict__)
        return
    console.print(
        f"trained on {report.examples} examples {report.per_label}; "
        f"held-out accuracy {report.holdout_accuracy:.1%} on {report.holdout}; saved to {report.path}"
    )


@router_app.command("explain")
def explain_cmd(
    question: Annotated[str, typer.Argument(help="a question to route")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show how the router would decide QUESTION (rules and classifier; the judge is not called)."""
    from ..graph.factory import build_router

    settings = make_app(config).settings
    decision = build_router(settings).decide(question)
    if as_json:
        print_json(decision.to_dict())
        return
    console.print(f"{decision.route} ({decision.reason}) scores {decision.scores}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(router_app, name="router")
