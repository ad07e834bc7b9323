#!/usr/bin/env python3
"""How big the attention explorer's page is, and how fast it opens and answers, at 64 and 512 tokens.

    .venv/bin/python benchmarks/bench_explorer.py            # the tiny preset and the paper's size
    .venv/bin/python benchmarks/bench_explorer.py --quick    # the tiny preset only

For each model size and text length: the page's size, the seconds Python takes to record the attention
and write the page, and in headless Chromium (Debian's chromium and chromium-driver) the seconds from
opening the file to the first view drawn, and the milliseconds each view takes to draw, and a head-view
redraw (what a hover costs). Random weights: sizes and times do not depend on training.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import make_tokenizer

from gpt1 import GPT1Config, GPT1ForCausalLM
from gpt1.explorer import attention_html

SIZES = {
    "tiny preset (3 x 192, 4 heads)": dict(n_layer=3, n_embd=192, n_head=4),
    "paper size (12 x 768, 12 heads)": dict(n_layer=12, n_embd=768, n_head=12),
}
TEXT = "The trophy didn't fit in the suitcase because it was too big. " * 80
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]  # fmt: skip
DRAW_TIMES = """
const done = arguments[arguments.length - 1];
const times = {};
for (const view of ["model", "head", "step", "summary"]) {
  gpt1Explorer.state.view = view;
  const start = performance.now();
  gpt1Explorer.render();
  times[view] = performance.now() - start;
}
gpt1Explorer.state.view = "head";
const start = performance.now();
for (let query = 0; query < 20; query++) { gpt1Explorer.state.hover = query; gpt1Explorer.render(); }
times.hover = (performance.now() - start) / 20;
done(times);
"""


def browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny preset only")
    args = parser.parse_args()
    tokenizer = make_tokenizer(vocab_size=1000, model_max_length=512)
    driver = browser()
    work = Path(tempfile.mkdtemp(prefix="gpt1-explorer-"))
    print(
        f"{'model':34} {'tokens':>6} {'page':>9} {'write s':>8} {'open s':>7}  draw ms: model head step summary | hover"
    )
    try:
        for name, sizes in list(SIZES.items())[: 1 if args.quick else None]:
            torch.manual_seed(0)
            model = GPT1ForCausalLM(GPT1Config(vocab_size=len(tokenizer), n_positions=512, **sizes)).eval()
            for tokens in (64, 512):
                ids = tokenizer(TEXT, add_special_tokens=False).input_ids[:tokens]
                started = time.perf_counter()
                page = attention_html(model, tokenizer, tokenizer.decode(ids)).save(work / f"{tokens}.html")
                written = time.perf_counter() - started
                started = time.perf_counter()
                driver.get(page.as_uri())
                driver.execute_async_script(
                    "const done = arguments[arguments.length - 1]; gpt1Explorer.ready.then(done);"
                )
                opened = time.perf_counter() - started
                draws = driver.execute_async_script(DRAW_TIMES)
                size = page.stat().st_size
                print(
                    f"{name:34} {tokens:>6} {size / 1e6:>7.2f}MB {written:>8.2f} {opened:>7.2f}  "
                    f"{draws['model']:>10.0f} {draws['head']:>4.0f} {draws['step']:>4.0f} {draws['summary']:>7.0f} | "
                    f"{draws['hover']:.0f}"
                )
    finally:
        driver.quit()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
