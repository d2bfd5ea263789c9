"""The static HTML report, rendered in headless Chromium (Debian ``chromium``)."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.clustering.curation import exclude, list_clusters
from wallwm.clustering.embed import EmbedConfig, HashingEmbedder
from wallwm.clustering.report import write_report
from wallwm.clustering.stage import ClusterConfig, run_cluster, run_embed
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segment import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


def hashing():
    return HashingEmbedder(32)


def test_report_renders_and_is_not_blank(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=9, size=32))
    run_ingest(
        IngestConfig(source=str(src), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    run_caption(CaptionStageConfig(dataset=str(ds)))
    run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    run_cluster(str(ds), ClusterConfig(ks=[6, 2]))
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
