"""The static HTML report, rendered in headless Chromium (Debian ``chromium``)."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from wallwm.clustering.curation import exclude, list_clusters
from wallwm.clustering.report import write_report
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


def test_report_renders_and_is_not_blank(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=9, size=32, cluster_ks=[6, 2])
    store = LanceStore(str(ds))
    excluded = list_clusters(store, level=1)[0]["cluster_id"]
    exclude(store, excluded)
    path = write_report(store, tmp_path / "report")
    page = path.read_text()
    assert "All clusters" in page and "near-duplicates" in page and excluded in page
    assert page.count("data:image/png;base64,") == 2 and "data:image/jpeg;base64," in page
    assert "class='excluded'" in page
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (make test installs it with apt-get)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1400",
            f"--screenshot={shot}",
            path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1400, 1200)
    ink = (img.astype(np.int16).sum(axis=2) < 600).mean()  # share of non-white pixels
    assert ink > 0.05 and img.std() > 20  # text, plots and thumbnails, not a blank page
