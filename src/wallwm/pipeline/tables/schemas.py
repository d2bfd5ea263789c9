"""Arrow schemas of every Lance table under a wallwm dataset root.

A dataset root (a local directory today; the URI is kept opaque so ``s3://`` works later) holds:

- ``episodes.lance`` -- one row per recorded episode (written by ``wallwm ingest``).
- ``events.lance`` -- one row per semantic event (written by ``wallwm segment``; captions,
  embeddings, clusters and weights are filled in by later stages).
- ``failures.lance`` -- one row per input that a stage could not process.
- ``runs.lance`` -- lineage: one row per stage run (stage, code version, config hash, versions).

Array-valued per-frame signals are stored as ``list<fixed_size_list<float32, D>>`` (time-major,
``actions_TA``): the list is the time axis, the fixed-size list the per-frame vector. ``D`` is fixed
per dataset when its episodes table is created (one embodiment per dataset keeps every downstream
tensor rectangular); episodes of another dimension are reported as failures, never truncated.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

EPISODES: Final = "episodes"
EVENTS: Final = "events"
FAILURES: Final = "failures"
RUNS: Final = "runs"
CLUSTERS: Final = "clusters"
TABLES: Final = (EPISODES, EVENTS, CLUSTERS, FAILURES, RUNS)

#: Used for a dataset whose first episodes carry no proprio state (Lance rejects size-0 vectors);
#: ``state_dim`` in each row is the truth (0 means "no state").
PLACEHOLDER_STATE_DIM: Final = 1

CAMERA_TYPE: Final = pa.struct(
    [
        pa.field("name", pa.string(), nullable=False),
        # Where the frames live: a video file path, or ``file.hdf5#/observations/images/cam``.
        pa.field("uri", pa.string(), nullable=False),
        pa.field("byte_length", pa.int64(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int64(), nullable=False),
        # Window of this episode inside a shared video file (LeRobot v3 packs many episodes).
        pa.field("from_timestamp_s", pa.float64(), nullable=False),
        pa.field("to_timestamp_s", pa.float64(), nullable=True),
    ]
)

GT_EVENT_TYPE: Final = pa.struct(
    [
        pa.field("start_frame", pa.int32(), nullable=False),
        pa.field("name", pa.string(), nullable=True),
    ]
)


def vector_series(dim: int) -> pa.DataType:
    """Type of a per-frame vector signal: ``list<fixed_size_list<float32, dim>>``."""
    return pa.list_(pa.list_(pa.float32(), dim))


#: The idle-trim range of an episode (``wallwm.pipeline.segmentation.idle``).
TRIM_FIELDS = (
    pa.field("trim_start_frame", pa.int64(), nullable=True),
    pa.field("trim_end_frame", pa.int64(), nullable=True),
)
#: Episode columns added after the first release, appended last (older tables get them added).
APPENDED_FIELDS = (
    *TRIM_FIELDS,
    # whether the recorded attempt succeeded, where the source says
    pa.field("success", pa.bool_(), nullable=True),
    # the first frame the source marks successful (what `eval segmentation --until-success`
    # scores up to), where it says
    pa.field("success_frame", pa.int64(), nullable=True),
)


def episodes_schema(action_dim: int, state_dim: int) -> pa.Schema:
    """Schema of the ``episodes`` table for one embodiment.

    Args:
        action_dim: Size of one action vector (``A``).
        state_dim: Size of one proprio state vector (``S``); 0 stores a placeholder size.

    Returns:
        The Arrow schema; ``episode_id`` is the merge key.
    """
    return pa.schema(
        [
            pa.field("episode_id", pa.string(), nullable=False),
            pa.field("source_uri", pa.string(), nullable=False),
            pa.field("source_format", pa.string(), nullable=False),
            pa.field("episode_key", pa.string(), nullable=False),
            pa.field("robot", pa.string(), nullable=True),
            pa.field("fps", pa.float64(), nullable=False),
            pa.field("num_frames", pa.int64(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("cameras", pa.list_(CAMERA_TYPE), nullable=False),
            pa.field("action_dim", pa.int32(), nullable=False),
            pa.field("state_dim", pa.int32(), nullable=False),
            pa.field("actions", vector_series(action_dim), nullable=False),
            pa.field("states", vector_series(state_dim or PLACEHOLDER_STATE_DIM), nullable=True),
            pa.field("action_names", pa.list_(pa.string()), nullable=True),
            pa.field("state_names", pa.list_(pa.string()), nullable=True),
            # One value per gripper per frame (bimanual robots have two): gripper_TG.
            pa.field("gripper", pa.list_(pa.list_(pa.float32())), nullable=True),
            pa.field("timestamps_s", pa.list_(pa.float64()), nullable=True),
            pa.field("gt_events", pa.list_(GT_EVENT_TYPE), nullable=True),
            pa.field("gt_events_source", pa.string(), nullable=True),
            # Lineage: what the row was built from and by whom.
            pa.field("source_fingerprint", pa.string(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("ingest_run_id", pa.string(), nullable=False),
            pa.field("code_version", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
            # Last (a table from before them gets them appended): the active frames
            # [trim_start_frame, trim_end_frame) without the idle start and end, the outcome.
            *APPENDED_FIELDS,
        ]
    )


KEYFRAME_TYPE: Final = pa.struct(
    [
        pa.field("camera", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),  # first | middle | last
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("jpeg", pa.binary(), nullable=False),
    ]
)


def events_schema() -> pa.Schema:
    """Schema of the ``events`` table (one row per semantic event of an episode).

    Frame ranges are half-open, ``[start_frame, end_frame)``. Caption, cluster and weight columns
    are created empty by segmentation and filled by later stages; embedding columns are added by
    the clustering stage once their dimensions are known (see :func:`embedding_field`).
    """
    return pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("episode_id", pa.string(), nullable=False),
            pa.field("event_index", pa.int32(), nullable=False),
            pa.field("num_events", pa.int32(), nullable=False),
            pa.field("start_frame", pa.int64(), nullable=False),
            pa.field("end_frame", pa.int64(), nullable=False),
            pa.field("start_s", pa.float64(), nullable=False),
            pa.field("end_s", pa.float64(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("cues", pa.list_(pa.string()), nullable=False),
            pa.field("action_start", pa.int64(), nullable=False),
            pa.field("action_end", pa.int64(), nullable=False),
            pa.field("keyframes", pa.list_(KEYFRAME_TYPE), nullable=False),
            pa.field("segment_method", pa.string(), nullable=False),
            pa.field("segment_config_hash", pa.string(), nullable=False),
            pa.field("segment_run_id", pa.string(), nullable=False),
            # The episode content the events were cut from (stale events are re-cut).
            pa.field("episode_content_hash", pa.string(), nullable=False),
            # Captioning stage.
            pa.field("caption", pa.string(), nullable=True),
            pa.field("verb", pa.string(), nullable=True),
            pa.field("object", pa.string(), nullable=True),
            pa.field("target", pa.string(), nullable=True),
            pa.field("done_state", pa.string(), nullable=True),
            pa.field("caption_backend", pa.string(), nullable=True),
            pa.field("caption_model", pa.string(), nullable=True),
            pa.field("caption_prompt_version", pa.string(), nullable=True),
            pa.field("caption_cache_key", pa.string(), nullable=True),
            # Clustering and curation stages.
            pa.field("cluster_id", pa.string(), nullable=True),
            pa.field("is_duplicate", pa.bool_(), nullable=True),
            pa.field("weight", pa.float32(), nullable=True),
        ]
    )


def embedding_field(name: str, dim: int) -> pa.Field:
    """A fixed-size float32 vector column (Lance builds vector indexes on these)."""
    return pa.field(name, pa.list_(pa.float32(), dim), nullable=True)


def clusters_schema(dim: int) -> pa.Schema:
    """Schema of the ``clusters`` table (hierarchical k-means over event embeddings).

    Level 1 is the finest (events belong to level-1 clusters); each level-``l`` cluster has a
    parent at level ``l + 1``. ``weight`` and ``excluded`` are the curated fields.
    """
    return pa.schema(
        [
            pa.field("cluster_id", pa.string(), nullable=False),
            pa.field("level", pa.int32(), nullable=False),
            pa.field("parent_id", pa.string(), nullable=True),
            pa.field("centroid", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("representatives", pa.list_(pa.string()), nullable=False),
            pa.field("duplicates", pa.int64(), nullable=False),
            pa.field("weight", pa.float64(), nullable=False),
            pa.field("excluded", pa.bool_(), nullable=False),
            pa.field("notes", pa.string(), nullable=False),
            pa.field("cluster_run_id", pa.string(), nullable=False),
        ]
    )


def failures_schema() -> pa.Schema:
    """Schema of the ``failures`` table; ``failure_id`` is content-derived so repeats merge."""
    return pa.schema(
        [
            pa.field("failure_id", pa.string(), nullable=False),
            pa.field("source_uri", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("episode_key", pa.string(), nullable=False),
            pa.field("file", pa.string(), nullable=False),
            pa.field("error_class", pa.string(), nullable=False),
            pa.field("message", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("resolved", pa.bool_(), nullable=False),
        ]
    )


def runs_schema() -> pa.Schema:
    """Schema of the ``runs`` lineage table: one row per stage run."""
    return pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("code_version", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("config_json", pa.string(), nullable=False),
            pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("table", pa.string(), nullable=False),
            pa.field("version_before", pa.int64(), nullable=True),
            pa.field("version_after", pa.int64(), nullable=True),
            pa.field("rows_written", pa.int64(), nullable=False),
            pa.field("rows_failed", pa.int64(), nullable=False),
            pa.field("message", pa.string(), nullable=False),
        ]
    )
