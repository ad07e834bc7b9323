"""The `gpt1` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import MISSING, fields

# Only the standard library and the option dataclasses at the top: `gpt1 --help` must not wait for
# torch. Each subcommand imports what it needs when it runs.
from .options import FinetuneConfig, TrainConfig


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_openai_gpt, upgrade_gpt1_folder
    from .model_folders import read_config

    if os.path.isdir(args.src) and read_config(args.src).get("model_type") == "gpt1":
        dst = upgrade_gpt1_folder(args.src, args.dst)
        print(f"Upgraded {args.src} -> {dst} (embedding rows cut to vocab_size, today's remote code)")
        return 0
    dst = convert_openai_gpt(args.src, args.dst, revision=args.revision)
    print(f"Converted {args.src} -> {dst}")
    return 0


def _add_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of the config dataclass, typed after the field, its help from the field's metadata."""
    for option in fields(config_class):
        flag = "--" + option.name.replace("_", "-")
        default = option.default if option.default is not MISSING else None
        help_text = option.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if default not in (None, "", False):
            help_text += f" (default: {default})"
        if option.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=help_text)
        elif option.name == "compile":  # `--compile` alone still means on, as when it was a switch
            parser.add_argument(flag, nargs="?", const="on", default=default, help=help_text)
        elif option.name == "report_to":
            parser.add_argument(flag, action="append", default=[], help=help_text)
        else:
            kind = {"int | None": int, "int": int, "float | None": float, "float": float}.get(str(option.type), str)
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    """--model and --revision, for the commands that read a model."""
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model")


def _train(args: argparse.Namespace) -> int:
    from .train import train

    config = TrainConfig(**{option.name: getattr(args, option.name) for option in fields(TrainConfig)})
    output = train(config)
    print(f'Saved the model to {output}. Try: gpt1 generate --model {output} "{config.sample_prompt}"')
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .finetune import finetune

    config = FinetuneConfig(**{option.name: getattr(args, option.name) for option in fields(FinetuneConfig)})
    output = finetune(config)
    print(f"Saved the best model to {output} (metrics in {output / 'eval_results.json'}).")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    url = push_folder(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        max_shard_size=args.max_shard_size,
    )
    print(f"Pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def _attention(args: argparse.Namespace) -> int:
    from transformers import AutoModel

    from .model_folders import load_model, load_tokenizer
    from .tokenization import pair_tokenizer_with_model

    if args.compare and not args.html:
        raise ValueError("--compare works with the HTML explorer: add --html attention.html.")
    tokenizer = load_tokenizer(args.model, revision=args.revision)
    model = load_model(AutoModel, args.model, revision=args.revision).eval()
    pair_tokenizer_with_model(tokenizer, model)
    if args.html:
        from .explorer import attention_html, html_size_summary

        compare = compare_tokenizer = None
        if args.compare:
            compare_tokenizer = load_tokenizer(args.compare)
            compare = load_model(AutoModel, args.compare).eval()
            pair_tokenizer_with_model(compare_tokenizer, compare)
        explorer = attention_html(
            model,
            tokenizer,
            args.text,
            compare=compare,
            compare_tokenizer=compare_tokenizer,
            names=(args.model, args.compare or ""),
        )
        print(f"Wrote {explorer.save(args.html)} ({html_size_summary(explorer)}): open it in a browser.")
        return 0

    from .viz import plot_attention, save_figure

    figure = plot_attention(model, tokenizer, args.text, layer=args.layer, head=args.head, query_token=args.query_token)
    print(f"Wrote {save_figure(figure, args.out)}")
    return 0


def _plot_metrics(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .viz import plot_metrics, save_figure

    out = args.out or Path(args.run_dir) / "loss_curve.png"
    print(f"Wrote {save_figure(plot_metrics(args.run_dir, samples=args.samples), out)}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .generate import generate

    generate(
        args.model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_samples=args.num_samples,
        seed=args.seed,
        revision=args.revision,
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .scoring import score

    scores = score(
        args.model,
        [task.strip() for task in args.tasks.split(",") if task.strip()],
        include_path=args.include_path,
        batch_size=args.batch_size,
        limit=args.limit,
        output=args.output,
        card=args.card,
        revision=args.revision,
    )
    for task, metrics in scores.items():
        print(f"{task}: " + ", ".join(f"{metric} {value:.4f}" for metric, value in metrics.items()))
    return 0


def _refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """argparse's "unrecognized arguments" error, from the subcommand, with the nearest real flag."""
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    subparser = subparsers.choices[command]
    flags = [flag for action in subparser._actions for flag in action.option_strings]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    wrong = unknown[0].split("=", 1)[0]
    close = difflib.get_close_matches(wrong.replace("_", "-"), flags, n=1, cutoff=0.6) if wrong.startswith("-") else []
    if close:
        message += f" (did you mean {close[0]}?)"
    subparser.error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt1", description="GPT-1 as a Hugging Face model package.", allow_abbrev=False
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # No abbreviations (allow_abbrev=False everywhere): `--max-step` must not quietly mean `--max-steps`.

    convert = subcommands.add_parser(
        "convert",
        allow_abbrev=False,
        help="convert an openai-gpt checkpoint, or a gpt1 folder saved before 0.2, to today's gpt1 folder",
        description="Convert an openai-gpt checkpoint (folder or Hub repo id) to a gpt1 folder with safetensors "
        "weights, remote code and the source's tokenizer. Given a gpt1 folder saved before 0.2 (embedding rows "
        "padded past vocab_size), write it in today's format instead.",
    )
    convert.add_argument("src", help="openai-gpt checkpoint (local folder or Hub repo id), or an old gpt1 folder")
    convert.add_argument("dst", help="output folder")
    convert.add_argument("--revision", default=None, help="branch, tag or commit of a Hub SRC")
    convert.set_defaults(handler=_convert)

    train = subcommands.add_parser(
        "train",
        allow_abbrev=False,
        help="pretrain a GPT-1 from scratch (Accelerate: CPU, GPU, DDP/FSDP, several machines)",
        description="Pretrain a GPT-1 on your text (default: a built-in corpus) and save a shareable HF folder. "
        "Run it under `accelerate launch -m gpt1 train` or `torchrun ... -m gpt1 train` for several processes.",
    )
    _add_options(train, TrainConfig)
    train.set_defaults(handler=_train)

    finetune = subcommands.add_parser(
        "finetune",
        allow_abbrev=False,
        help="fine-tune a pretrained GPT-1 with transformers.Trainer (classification, multiple choice, LM)",
        description="Fine-tune a gpt1 model on a Hub dataset or a local CSV/JSON/parquet file with GPT-1's recipe "
        "(lr 6.25e-5, batch 32, 3 epochs, 0.2%% warmup then linear decay, auxiliary LM loss 0.5) for a model of "
        "the paper's size, lr 3e-4 for 10 epochs below it; evaluate each epoch and save the best model as an HF "
        "folder.",
    )
    _add_options(finetune, FinetuneConfig)
    finetune.set_defaults(handler=_finetune)

    push = subcommands.add_parser(
        "push",
        allow_abbrev=False,
        help="upload a model folder to the Hugging Face Hub in one commit",
        description="Upload the shareable files of a gpt1 model folder (weights, config, remote code, tokenizer, "
        "model card, loss curve; no checkpoints or optimizer states) to REPO_ID in one commit. Log in first with "
        "`hf auth login` or set HF_TOKEN.",
    )
    push.add_argument("folder", help="the model folder (from gpt1 train or gpt1 finetune)")
    push.add_argument("repo_id", help="the Hub repo, e.g. your-name/gpt1-tiny (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    push.add_argument("--commit-message", default=None)
    push.add_argument(
        "--max-shard-size", default=None, help='split the weights into shards of at most this, e.g. "500MB"'
    )
    push.set_defaults(handler=_push)

    attention = subcommands.add_parser(
        "attention",
        allow_abbrev=False,
        help="look at a model's attention on a text: an interactive HTML explorer, or PNG heatmaps",
        description="With --html, write the attention explorer: one self-contained page (no network) with the "
        "layers x heads grid, a head view to hover tokens in, softmax(QK^T/sqrt(d))V step by step with the model's "
        "own numbers, per-head scores, what <|classify|> reads, and --compare for a second model. Without it, draw "
        "heatmaps for TEXT as a PNG (needs matplotlib: scripts/install.py --extras viz): query tokens down, key "
        "tokens across, one panel per layer or head; with --query-token, bar charts of where that token attends.",
    )
    attention.add_argument("text", help="the text to look at")
    _add_model_source(attention)
    attention.add_argument("--html", default=None, help="write the interactive explorer to this .html file")
    attention.add_argument(
        "--compare", default=None, help="with --html: a second model folder or Hub id (same tokenizer) to compare"
    )
    attention.add_argument("--out", default="attention.png", help="the PNG to write (default attention.png)")
    attention.add_argument("--layer", default="all", help="a layer index, or all (default)")
    attention.add_argument("--head", default="mean", help="a head index, all, or mean over heads (default)")
    attention.add_argument("--query-token", default=None, help="draw where this token of TEXT attends, per layer")
    attention.set_defaults(handler=_attention)

    plot_metrics = subcommands.add_parser(
        "plot-metrics",
        allow_abbrev=False,
        help="draw a training run's loss curves and samples (needs matplotlib: scripts/install.py --extras viz)",
        description="Turn RUN_DIR/metrics.jsonl into a PNG: train and validation loss by step, with the gap "
        "shaded, the step where validation loss stopped improving while training loss fell marked, and the "
        "learning rate on a second axis; beside it, a few of the samples in RUN_DIR/samples.jsonl, from first to "
        "last, lettered like their markers on the validation curve.",
    )
    plot_metrics.add_argument("run_dir", help="a gpt1 train output folder (holding metrics.jsonl)")
    plot_metrics.add_argument("--out", default=None, help="the PNG to write (default RUN_DIR/loss_curve.png)")
    plot_metrics.add_argument(
        "--samples", type=int, default=4, help="samples shown beside the curve, first to last (0: none; default 4)"
    )
    plot_metrics.set_defaults(handler=_plot_metrics)

    generate = subcommands.add_parser(
        "generate",
        allow_abbrev=False,
        help="generate text from a model",
        description="Stream text generated from PROMPT to stdout.",
    )
    generate.add_argument("prompt", help="the text to continue")
    _add_model_source(generate)
    generate.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate (default 100)")
    generate.add_argument("--temperature", type=float, default=0.8, help="0 means greedy decoding (default 0.8)")
    generate.add_argument("--top-k", type=int, default=50, help="0 disables top-k filtering (default 50)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    generate.add_argument("--num-samples", type=int, default=1, help="continuations to write (default 1)")
    generate.add_argument("--seed", type=int, default=None, help="random seed (default: a different one each run)")
    generate.set_defaults(handler=_generate)

    evaluate = subcommands.add_parser(
        "eval",
        allow_abbrev=False,
        help="score a model with lm-evaluation-harness (needs lm-eval: scripts/install.py --extras eval)",
        description="Score a model on lm-evaluation-harness tasks through its hf backend: lm-eval's own tasks, or "
        "tasks you define in YAML files (multiple choice, perplexity, generation) in --include-path. Writes the "
        "results to lm_eval_results.json in the model folder.",
    )
    _add_model_source(evaluate)
    evaluate.add_argument("--tasks", required=True, help="comma-separated task names")
    evaluate.add_argument(
        "--include-path", default=None, help="a folder of task YAML files; data files they name are found there"
    )
    evaluate.add_argument("--batch-size", type=int, default=8, help="examples per forward (default 8)")
    evaluate.add_argument("--limit", type=int, default=None, help="score only the first N examples of each task")
    evaluate.add_argument("--output", default=None, help="the JSON to write (default MODEL/lm_eval_results.json)")
    evaluate.add_argument("--card", action="store_true", help="also put the scores in the model folder's README.md")
    evaluate.set_defaults(handler=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    from .stopping import EXIT_STOPPED, TrainingStopped

    try:
        return args.handler(args)
    except TrainingStopped as stopped:
        if os.environ.get("RANK", "0") == "0":  # every process of a distributed run stops; one of them says so
            print(stopped, file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which turns it into a graceful stop)
        print(f"gpt1 {args.command}: interrupted.", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C ended
    except (ValueError, FileNotFoundError, OSError, ImportError) as error:
        # Bad input (and a full disk) gets one clear line, not a traceback.
        print(f"gpt1 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        from .anomalies import TrainingDivergedError

        if not isinstance(error, TrainingDivergedError):
            raise
        print(f"gpt1 {args.command}: {error}", file=sys.stderr)
        return 1
    except BaseException as error:
        # A Rust library (tokenizers, safetensors) that panics on input no check foresaw raises pyo3's
        # PanicException, a BaseException: one line for it too. Anything else goes on as it came.
        if type(error).__name__ != "PanicException":
            raise
        detail = " ".join(str(error).split())
        print(f"gpt1 {args.command}: error: a library failed on this input ({detail})", file=sys.stderr)
        return 2


def run() -> None:
    """The `gpt1` command (and `python -m gpt1`): `main`, then exit without tearing the interpreter down.

    With torch, transformers and datasets loaded, Python's orderly shutdown (freeing every module's objects one
    by one) takes 1.7 s on a 2-core machine: 2% of a 90-second training run, spent after the work is saved. The
    exit handlers still run first (logging, trackers, temporary files), and the streams are flushed; only the
    teardown is skipped. `main` itself returns normally, for callers in the same process."""
    code = main()  # an exception (or argparse's SystemExit) leaves the normal way, traceback and all
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if sys.gettrace() or sys.getprofile() or any(thread.is_alive() and not thread.daemon for thread in others):
        # A profiler, debugger or coverage tool writes its results at the normal exit, and a thread still at
        # work (an upload, an executor) is waited for there: exit the normal way.
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe: nothing left to say anyway
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
