"""Sharing trained models: ``genfw export RUN DIR`` writes a folder the Hugging Face Hub takes as a
model repository (:mod:`genfw.export`), ``genfw push RUN USER/NAME`` uploads it (:mod:`genfw.hub`).
``genfw.load`` and ``genfw sample`` read an exported folder, or ``hf://USER/NAME``, back."""

from __future__ import annotations

import argparse

import genfw
from genfw.commands import Commands


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run folder")
    parser.add_argument("dir", help="the folder to write (a Hub model repository's files)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing exported folder")


def run_export(args: argparse.Namespace) -> int:
    from genfw import export
    from genfw.plugins import get_host

    print(export.export_run(args.run, args.dir, overwrite=args.overwrite, registry=get_host().registry))
    return 0


def configure_push(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder (exported on the way) or an exported folder")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub model repository, USER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--message", help="the commit message")


def run_push(args: argparse.Namespace) -> int:
    from genfw import hub
    from genfw.plugins import get_host

    url = hub.push(
        args.run, args.repo_id, private=args.private, message=args.message, registry=get_host().registry
    )
    print(url)
    return 0


@genfw.hookimpl
def genfw_register_commands(commands: Commands) -> None:
    commands.add(
        "export",
        help="write a run as a Hugging Face Hub model folder (weights, config, model card)",
        description="e.g. genfw export runs/vae exported/vae: model.safetensors (the sampling weights), "
        "config.yaml, run.json, samples.png and a README.md model card; genfw.load(DIR) and genfw sample "
        "DIR read it back bit-exactly.",
        configure=configure_export,
        run=run_export,
    )
    commands.add(
        "push",
        help="upload a run (exported) to the Hugging Face Hub",
        description="e.g. genfw push runs/vae me/vae-digits: exports the run and uploads it with "
        "huggingface_hub (a token from `hf auth login` or HF_TOKEN); genfw.load('hf://me/vae-digits') "
        "reads it back.",
        configure=configure_push,
        run=run_push,
    )
