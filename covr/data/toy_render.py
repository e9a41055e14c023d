"""Rendering and mp4 encoding of the toy dataset's scenes: one moving shape on a plain background.

Attributes are few and visually strong (large shapes, saturated colours) so a tiny randomly
initialised encoder can tell them apart; the start position is jittered so no two videos are
pixel-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (235, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 80, 240),
    "yellow": (245, 230, 40),
    "purple": (160, 50, 220),
    "orange": (250, 140, 20),
}
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.14, "large": 0.25}  # shape radius as a fraction of the frame side
MOTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # (dx, dy)
TRAVEL = 0.35  # distance covered over the clip, fraction of the frame side


@dataclass(frozen=True)
class Scene:
    """What a toy video shows; its caption is a deterministic function of these five fields."""

    size: str
    colour: str
    shape: str
    motion: str
    background: str

    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} moving {self.motion} on a {self.background} background"

    def replace(self, **changes: str) -> Scene:
        return Scene(**{**self.__dict__, **changes})


def all_scenes() -> list[Scene]:
    """Every attribute combination (2 x 6 x 3 x 4 x 3 = 432), in a fixed order."""
    return [
        Scene(size, colour, shape, motion, background)
        for size in SIZES
        for colour in COLOURS
        for shape in SHAPES
        for motion in MOTIONS
        for background in BACKGROUNDS
    ]


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """bool [S, S]: pixels inside the shape centred at (cx, cy) with radius r (pixels)."""
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":  # half side 0.85 r: about the circle's area
        return (np.abs(xx - cx) <= 0.85 * r) & (np.abs(yy - cy) <= 0.85 * r)
    if shape == "triangle":  # apex up, base at cy + 0.8 r
        top, bottom = cy - r, cy + 0.8 * r
        half_width = (yy - top) / (bottom - top) * r
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, num_frames: int, size: int, jitter: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """uint8 [T, S, S, 3]: the shape moving linearly across the frame; jitter shifts the path (fraction of S)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = MOTIONS[scene.motion]
    radius = SIZES[scene.size] * size
    # paths start at the centre and move outwards: a path centred on the frame would look the same
    # frame by frame in both directions, and an order-free pooling of frames could not tell them apart
    start_x = size * (0.5 + jitter[0])
    start_y = size * (0.5 + jitter[1])
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = np.asarray(BACKGROUNDS[scene.background], dtype=np.uint8)
    colour = np.asarray(COLOURS[scene.colour], dtype=np.uint8)
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        cx, cy = start_x + dx * TRAVEL * size * progress, start_y + dy * TRAVEL * size * progress
        frames[t][_shape_mask(scene.shape, xx, yy, cx, cy, radius)] = colour
    return frames


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8) -> None:
    """Encode uint8 [T, H, W, 3] as MPEG-4 Part 2 in an mp4 (in every PyAV wheel; decord reads it)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless at toy sizes: colours must survive 4:2:0 + DCT
        stream.codec_context.thread_count = 1  # deterministic output
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
