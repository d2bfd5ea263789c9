"""The episode browser, rendered in headless Chromium: every episode, its flags, timeline and
keyframes; the flag filter (given in the URL) runs in the real browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from wallwm.pipeline.browser import write_episode_browser
from wallwm.pipeline.quality import dataset_quality
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore, sql_quote

pytestmark = pytest.mark.usefixtures("ray_local")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian chromium is not installed (make test installs it with apt-get)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run(
        [binary, *flags, *args], check=True, capture_output=True, text=True, timeout=120
    )


def test_every_episode_is_browsable_and_filterable(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=6, size=32, caption=True)
    store = LanceStore(str(ds))
    episodes = store.read(schemas.EPISODES, columns=["episode_id", "episode_key"]).to_pylist()
    failed = episodes[0]
    store.update(
        schemas.EPISODES, f"episode_id = {sql_quote(failed['episode_id'])}", {"success": "false"}
    )
    page = write_episode_browser(store, tmp_path / "report")
    text = page.read_text()
    assert all(e["episode_key"] in text for e in episodes)
    assert text.count("class='episode") == len(episodes)
    assert "<span class='flag'" in text and text.count("class='episode flagged'") >= 1
    thumbs = re.findall(r"src='(thumbs/[^']+\.jpg)'", text)
    assert thumbs and all((page.parent / t).stat().st_size > 0 for t in thumbs)
    events = store.count(schemas.EVENTS)
    assert text.count("class='event'") == events  # one timeline segment per event

    # the filter, given in the URL, runs in the browser: only the failed episodes stay shown
    # (the planted one, and attempts the simulator itself recorded as failed)
    failed_keys = {q.episode_key for q in dataset_quality(store) if "failed" in q.flags}
    assert failed["episode_key"] in failed_keys
    dom = chromium("--dump-dom", page.as_uri() + "#flag=failed").stdout
    cards = re.findall(r'<div class="episode[^"]*"[^>]*>', dom)
    shown = [c for c in cards if "display: none" not in c]
    assert len(cards) == len(episodes) and len(shown) == len(failed_keys)
    assert all('data-flags="failed"' in c for c in shown)
    assert f"{len(failed_keys)} of {len(episodes)} episodes" in dom

    shot = tmp_path / "shot.png"
    chromium("--window-size=1200,1200", f"--screenshot={shot}", page.as_uri())
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1200, 1200)
    ink = (img.astype(np.int16).sum(axis=2) < 600).mean()
    assert ink > 0.03 and img.std() > 20  # timelines, keyframes and text, not a blank page
