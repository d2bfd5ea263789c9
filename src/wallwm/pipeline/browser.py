"""The episode browser: every episode of a dataset on one local, filterable page.

``episodes.html`` (written next to the cluster report by ``wallwm report``) shows each episode
with its instruction, length, quality flags and idle-trim range, an events timeline (one segment
per event, its caption on hover, the trimmed margins hatched) and the middle keyframe of every
event with its caption. A search box (episode, instruction, captions) and a flag filter narrow the
list in the page itself -- no server; the filter can also be given in the URL
(``episodes.html#flag=failed&q=drawer``) to share a view. Keyframes are written as files under
``thumbs/`` and loaded lazily, so the page stays small for large datasets.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from wallwm.pipeline.quality import FLAGS, dataset_quality
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import TableStore

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
.controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd}
.controls input,.controls select{font-size:15px;padding:4px;margin-right:12px}
.episode{margin:14px 0;padding:8px 10px;border-left:4px solid #4a7;background:#fafafa}
.episode.flagged{border-left-color:#d64}
.flag{display:inline-block;background:#d64;color:#fff;border-radius:3px;padding:0 6px;margin:0 3px;
font-size:12px}
.timeline{position:relative;height:22px;background:#eee;margin:6px 0}
.timeline .event{position:absolute;top:0;height:22px;opacity:.85}
.timeline .trimmed{position:absolute;top:0;height:22px;
background:repeating-linear-gradient(45deg,#bbb,#bbb 4px,#eee 4px,#eee 8px)}
.frames{display:flex;flex-wrap:wrap;gap:6px}
.frames figure{margin:0;width:112px;font-size:11px}
.frames img{width:112px;border:1px solid #ddd}
.meta{color:#666;font-size:13px}
"""

SCRIPT = """
function apply(){
  const q=document.getElementById('q').value.toLowerCase();
  const f=document.getElementById('flag').value;
  let shown=0;
  for(const el of document.querySelectorAll('.episode')){
    const flags=el.dataset.flags?el.dataset.flags.split(' '):[];
    const ok=(!q||el.dataset.text.includes(q))&&(f==='all'||(f==='flagged'&&flags.length)||
      (f==='clean'&&!flags.length)||flags.includes(f));
    el.style.display=ok?'':'none';
    if(ok)shown++;
  }
  document.getElementById('count').textContent=shown+' of '+TOTAL+' episodes';
}
function fromHash(){
  const p=new URLSearchParams(location.hash.slice(1));
  if(p.get('q'))document.getElementById('q').value=p.get('q');
  if(p.get('flag'))document.getElementById('flag').value=p.get('flag');
  apply();
}
window.addEventListener('hashchange',fromHash);
document.addEventListener('DOMContentLoaded',fromHash);
"""

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b")


def _episodes(store: TableStore) -> list[dict[str, Any]]:
    columns = ["episode_id", "episode_key", "instruction", "num_frames", "fps"]
    schema = store.schema(schemas.EPISODES)
    columns += [c for c in ("trim_start_frame", "trim_end_frame") if schema and c in schema.names]
    rows = store.read(schemas.EPISODES, columns=columns).to_pylist()
    return sorted(rows, key=lambda r: r["episode_key"])


def _events(store: TableStore) -> dict[str, list[dict[str, Any]]]:
    if not store.exists(schemas.EVENTS):
        return {}
    table = store.read(
        schemas.EVENTS,
        columns=["event_id", "episode_id", "start_frame", "end_frame", "caption", "keyframes"],
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for e in table.to_pylist():
        out.setdefault(e["episode_id"], []).append(e)
    for events in out.values():
        events.sort(key=lambda e: e["start_frame"])
    return out


def _thumb(out: Path, event: dict[str, Any]) -> str | None:
    """Write the event's middle keyframe (first camera) to ``thumbs/``; its relative path."""
    frames = [k for k in event.get("keyframes") or [] if k["position"] == "middle"]
    if not frames:
        return None
    name = f"thumbs/{event['event_id']}.jpg"
    (out / name).write_bytes(frames[0]["jpeg"])
    return name


def _card(ep: dict[str, Any], events: list[dict[str, Any]], flags: list[str], out: Path) -> str:
    esc = html.escape
    total = max(int(ep["num_frames"]), 1)
    start, end = ep.get("trim_start_frame"), ep.get("trim_end_frame")
    segments = []
    for k, e in enumerate(events):
        left, width = (
            100 * e["start_frame"] / total,
            100 * (e["end_frame"] - e["start_frame"]) / total,
        )
        segments.append(
            f"<div class='event' title='{esc(e['caption'] or f'event {k + 1}')}' style='left:"
            f"{left:.2f}%;width:{width:.2f}%;background:{COLOURS[k % len(COLOURS)]}'></div>"
        )
    if start is not None and end is not None:
        if start > 0:
            segments.append(
                f"<div class='trimmed' style='left:0;width:{100 * start / total:.2f}%'></div>"
            )
        if end < total:
            left = 100 * end / total
            segments.append(
                f"<div class='trimmed' style='left:{left:.2f}%;width:{100 - left:.2f}%'></div>"
            )
    figures = []
    for e in events:
        src = _thumb(out, e)
        img = f"<img loading='lazy' src='{src}' alt=''>" if src else ""
        figures.append(f"<figure>{img}<figcaption>{esc(e['caption'] or '')}</figcaption></figure>")
    text = " ".join(
        [ep["episode_key"], ep["instruction"] or "", *(e["caption"] or "" for e in events)]
    )
    badges = "".join(f"<span class='flag' title='{esc(FLAGS[f])}'>{esc(f)}</span>" for f in flags)
    trim = (
        f"; active frames {start}-{end}" if start is not None and (start, end) != (0, total) else ""
    )
    return (
        f"<div class='episode{' flagged' if flags else ''}' data-flags='{esc(' '.join(flags))}' "
        f"data-text='{esc(text.lower())}'><b>{esc(ep['episode_key'])}</b> {badges}"
        f"<div class='meta'>{esc(ep['instruction'] or '')} &mdash; {total} frames, "
        f"{total / float(ep['fps']):.1f} s, {len(events)} events{trim}</div>"
        f"<div class='timeline'>{''.join(segments)}</div>"
        f"<div class='frames'>{''.join(figures)}</div></div>"
    )


def write_episode_browser(store: TableStore, out_dir: str | Path) -> Path:
    """Write ``episodes.html`` (and ``thumbs/``) under ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    episodes = _episodes(store)
    events = _events(store)
    flags = {q.episode_id: q.flags for q in dataset_quality(store)}
    options = "".join(
        f"<option value='{f}'>{f}</option>" for f in ("all", "flagged", "clean", *FLAGS)
    )
    cards = [_card(ep, events.get(ep["episode_id"], []), flags.get(ep["episode_id"], []), out)
             for ep in episodes]  # fmt: skip
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>wallwm episodes</title>"
        f"<style>{STYLE}</style><script>const TOTAL={json.dumps(len(episodes))};{SCRIPT}</script>"
        f"</head><body><h1>Episodes of {html.escape(store.root)}</h1>"
        "<div class='controls'><input id='q' placeholder='search episodes, instructions, "
        "captions' oninput='apply()' size='40'><select id='flag' onchange='apply()'>"
        f"{options}</select><span id='count'></span></div>{''.join(cards)}</body></html>"
    )
    path = out / "episodes.html"
    path.write_text(page, encoding="utf-8")
    return path
