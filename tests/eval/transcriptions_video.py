"""EgoCVR and TF-CoVR, their protocols and text rules, as plain loops over Python floats, written
from ../shared/guide/video-benchmarks.md and the benchmarks' released evaluation code
(egocvr_retrieval.py; TF-CoVR's finegd_test.py and TestCirco.compute_metrics). Nothing here
imports covr or torch: it is the independent reference of tests/eval/test_eval_video_protocols.py.

A clip's embedding is frames [F][Q][E]; a query is tokens [Q][E]. Ties go to the lower gallery
position (the order the benchmark's own file lists its entries).
"""

from __future__ import annotations

import re

from transcriptions import dot, normalised, order, recall, token_mean


def frame_mean(frames):
    """[F][Q][E] -> [Q][E]: the mean over frames."""
    return [[sum(f[q][e] for f in frames) / len(frames) for e in range(len(frames[0][0]))] for q in range(len(frames[0]))]


# ---- EgoCVR ---------------------------------------------------------------------------------------


def egocvr(queries, data_clips, frames_of, query_tokens, setting, min_gallery=2, unique=False, exclude_query=False):
    """queries: [{"reference", "targets", "global", "local"}]; data_clips: egocvr_data.csv's clip per
    row; frames_of: {clip: frames} of the readable clips. A query ranks the rows its list names
    (each position once; `unique`: each clip once, at its first row of the file); cosine of the
    normalised token-mean query and the normalised frame-mean token-mean target; hit = any target
    clip in the top K; fewer than `min_gallery` entries: not scored. -> (metrics, unscored count)."""
    ks = (1, 5, 10) if setting == "global" else (1, 2, 3)
    vector = {c: normalised(token_mean(frame_mean(f))) for c, f in frames_of.items()}
    hits = {k: [] for k in ks}
    unscored = 0
    for i, q in enumerate(queries):
        entries = [(p, data_clips[p]) for p in dict.fromkeys(q[setting]) if data_clips[p] in vector]
        if exclude_query:
            entries = [(p, c) for p, c in entries if c != q["reference"]]
        if unique:
            entries = sorted({c: data_clips.index(c) for _, c in entries}.items(), key=lambda e: e[1])
            entries = [(p, c) for c, p in entries]
        if len(entries) < min_gallery:
            unscored += 1
            continue
        qv = normalised(token_mean(query_tokens[i]))
        ranked = sorted(entries, key=lambda e: (-dot(qv, vector[e[1]]), e[0]))
        for k in ks:
            hits[k].append(any(c in q["targets"] for _, c in ranked[:k]))
    return {f"R@{k}": recall(h) for k, h in hits.items()}, unscored


def ego_narration(text):
    """An Ego4D narration without its leading "#C" / "# C" / "#O" tag."""
    text = text.strip()
    if text.startswith("#"):
        text = text[1:].lstrip()
        text = text[1:] if text[:1].isalpha() and text[1:2] in (" ", "") else text
    return text.strip()


# ---- TF-CoVR -------------------------------------------------------------------------------------

NUMBER_WORDS = {
    0.5: "half", 1.0: "one", 1.5: "one and a half", 2.0: "two", 2.5: "two and a half", 3.0: "three",
    3.5: "three and a half", 4.0: "four", 4.5: "four and a half", 5.0: "five", 5.5: "five and a half",
    6.0: "six", 6.5: "six and a half", 7.0: "seven",
}  # fmt: skip


def tf_covr_text(text, max_words=30):
    """Numbers to words, then TF-CoVR's pre_caption (keeps "."; strips !"()*#:;~)."""
    text = re.sub(r"\b\d+(\.\d+)?\b", lambda m: NUMBER_WORDS.get(float(m.group(0)), m.group(0)), text)
    for ch in '!"()*#:;~':
        text = text.replace(ch, " ")
    text = re.sub(r"\s{2,}", " ", text.lower()).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def tf_covr(queries, frames_of, query_tokens, unique=False, ks=(5, 10, 25, 50)):
    """queries: [{"reference", "target", "gts"}]; gallery = every row's target (`unique`: each video
    once, in first-row order); token means, dot products; the query's own video scored 100 below
    its score; top 50; AP@K = sum_{i<=K} P@i rel_i / min(|G|, K) (|G| as listed, or distinct for
    `unique`); R@K = entries equal to the target among the top K (or whether it is there)."""
    entries = [q["target"] for q in queries]
    if unique:
        entries = list(dict.fromkeys(entries))
    vector = {v: token_mean(frame_mean(frames_of[v])) for v in entries}
    aps, recalls = {k: [] for k in ks}, {k: [] for k in ks}
    for i, q in enumerate(queries):
        qv = token_mean(query_tokens[i])
        scores = [dot(qv, vector[e]) - (100.0 if e == q["reference"] else 0.0) for e in entries]
        predicted = [entries[j] for j in order(scores)][:50]
        labels = [p in q["gts"] for p in predicted]
        found, precision = 0, []
        for position, relevant in enumerate(labels, start=1):
            found += relevant
            precision.append(found * relevant / position)
        size = len(set(q["gts"])) if unique else len(q["gts"])
        for k in ks:
            aps[k].append(sum(precision[:k]) / min(size, k))
            top = predicted[:k]
            recalls[k].append(float(q["target"] in top) if unique else float(top.count(q["target"])))
    out = {f"mAP@{k}": 100.0 * sum(v) / len(v) for k, v in aps.items()}
    out.update({f"R@{k}": 100.0 * sum(v) / len(v) for k, v in recalls.items()})
    return out


def pre_caption(text, max_words=30):
    """CoVR / BLIP's pre_caption: lower case, .!"()*#:;~ to spaces, whitespace collapsed, max_words words."""
    for ch in '.!"()*#:;~':
        text = text.replace(ch, " ")
    return " ".join(text.lower().split()[:max_words])
