"""MP4 encoding and frame-accurate decoding with PyAV (the video half of LeRobot v3 storage).

Many episodes share one file: episode ``e`` occupies ``[from_timestamp, to_timestamp)`` of it, as in
LeRobot v3. Frames are encoded with a short GOP so that a random frame costs at most a couple of
decoded frames.
"""

from __future__ import annotations

import collections
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from metis_core.io import CorruptFileError, atomic_write

__all__ = ["VideoReader", "encode_video"]

CODEC = "libx264"
PIX_FMT = "yuv420p"
GOP = 2


def encode_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float) -> dict:
    """Encode frames to an MP4 file atomically.

    Args:
        path: Target ``.mp4`` path.
        frames: ``(N, H, W, 3)`` uint8 RGB; H and W must be even (yuv420p).
        fps: Frame rate written into the stream.

    Returns:
        The ``info`` block LeRobot keeps for a video feature (codec, pix_fmt, size, fps).

    Raises:
        ValueError: For frames of the wrong shape or dtype.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"encode_video: expected (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")  # fmt: skip
    height, width = int(frames.shape[1]), int(frames.shape[2])
    if height % 2 or width % 2:
        raise ValueError(f"encode_video: height and width must be even for yuv420p, got {height}x{width}")  # fmt: skip
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_write(path, "wb") as handle, av.open(handle, mode="w", format="mp4") as container:
        stream = container.add_stream(CODEC, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.options = {"g": str(GOP), "crf": "23", "preset": "veryfast", "tune": "zerolatency"}  # fmt: skip
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            video_frame.time_base = Fraction(1) / rate
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": "h264",
        "video.pix_fmt": PIX_FMT,
        "video.is_depth_map": False,
        "video.fps": float(fps),
        "video.channels": 3,
        "has_audio": False,
    }


class VideoReader:
    """Decodes frames at given timestamps from one MP4 file, keeping the container open.

    Random access seeks to the keyframe before the wanted time and decodes forward (with the short
    GOP we write, at most a couple of frames). A request for a later time close to the last one
    decoded continues the running decoder instead of seeking again, and the last few decoded
    frames are cached, so sequential reads (whole episodes, motion windows) decode each frame once.

    Args:
        path: The ``.mp4`` file.
        cache_frames: How many decoded frames to keep.
    """

    def __init__(self, path: str | os.PathLike[str], *, cache_frames: int = 8) -> None:
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise CorruptFileError(f"{self.path}: expected an MP4 video, cannot open it ({err}); it is truncated or not a video") from err  # fmt: skip
        if not self._container.streams.video:
            self._container.close()
            raise CorruptFileError(f"{self.path}: expected a video stream, the file has none")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "SLICE"
        self._time_base = float(self._stream.time_base)
        self._start = self._stream.start_time or 0
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._frame_s = 1.0 / float(rate) if rate else 1.0 / 30.0
        self._decoder = None  # running frame iterator after the last decoded frame
        self._last_time = -float("inf")
        self._cache: collections.OrderedDict[tuple[float, tuple[int, int] | None], np.ndarray] = collections.OrderedDict()  # fmt: skip
        self._cache_size = cache_frames
        #: Frames the decoder produced, seeks, and requests served from the cache (for
        #: benchmarks: they show that frames are really decoded, not replayed).
        self.stats = {"decoded": 0, "seeks": 0, "cache_hits": 0}

    @property
    def rate(self) -> float | None:
        """Frame rate the stream declares (None if it declares none)."""
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else None

    @property
    def frame_count(self) -> int:
        """Frames the container declares (0 if unknown)."""
        return int(self._stream.frames or 0)

    def all_frame_times(self) -> np.ndarray:
        """Decode every frame from the start; ``(N,)`` seconds of each (for ``check --deep``).

        Raises:
            CorruptFileError: If decoding fails part-way.
        """
        self._decoder = None
        times = []
        try:
            self._container.seek(self._start, stream=self._stream, backward=True, any_frame=False)
            for frame in self._container.decode(self._stream):
                times.append((frame.pts - self._start) * self._time_base)
        except (av.error.FFmpegError, OSError) as err:
            raise CorruptFileError(f"{self.path}: decoding failed after {len(times)} frames ({err}); the video is truncated or corrupt") from err  # fmt: skip
        self._last_time = -float("inf")
        return np.asarray(times, dtype=np.float64)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the stored frames."""
        return int(self._stream.height), int(self._stream.width)

    def close(self) -> None:
        """Release the file."""
        self._decoder = None
        self._container.close()

    def frames_at(
        self,
        timestamps: np.ndarray | list[float],
        *,
        tolerance_s: float = 1e-3,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Decode the frames shown at the given times (seconds from the file's start).

        Args:
            timestamps: ``(K,)`` seconds.
            tolerance_s: Largest allowed distance between a wanted time and the decoded frame.
            size: ``(height, width)`` to scale the frames to while converting them to RGB
                (FFmpeg's swscale, bilinear), or None for the stored size.

        Returns:
            ``(K, H, W, 3)`` uint8 RGB.

        Raises:
            CorruptFileError: If a frame cannot be found within the tolerance.
        """
        wanted = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        try:
            out = [self._frame_at(float(target), tolerance_s, size) for target in wanted]
        except (av.error.FFmpegError, OSError) as err:  # e.g. a truncated file (EACCES, EOF)
            self._decoder = None
            raise CorruptFileError(f"{self.path}: cannot decode the frames at t={wanted[:4].round(4).tolist()} s ({type(err).__name__}: {err}); the video is truncated or corrupt") from err  # fmt: skip
        height, width = size or self.size
        return np.stack(out) if out else np.zeros((0, height, width, 3), np.uint8)

    def _frame_at(self, target: float, tolerance_s: float, size: tuple[int, int] | None) -> np.ndarray:  # fmt: skip
        for (time, cached_size), image in self._cache.items():
            if cached_size == size and abs(time - target) <= min(tolerance_s, 0.25 * self._frame_s):  # fmt: skip
                self.stats["cache_hits"] += 1
                return image
        # Note: continuing the running decoder is only valid forward and close by (a GOP or so);
        # otherwise seek to the keyframe before the target.
        ahead = target - self._last_time
        if self._decoder is None or not (0 < ahead <= (GOP + 1) * self._frame_s + tolerance_s):
            seek_pts = round(target / self._time_base) + self._start
            self._container.seek(seek_pts, stream=self._stream, backward=True, any_frame=False)
            self._decoder = self._container.decode(self._stream)
            self.stats["seeks"] += 1
        best, best_time, best_gap = None, 0.0, float("inf")
        for frame in self._decoder:
            self.stats["decoded"] += 1
            time = (frame.pts - self._start) * self._time_base
            self._last_time = time
            gap = abs(time - target)
            if gap < best_gap:
                best, best_time, best_gap = frame, time, gap
            if time >= target - tolerance_s:
                break
        else:
            self._decoder = None  # end of stream: the next request seeks
        if best is None or best_gap > tolerance_s:
            self._decoder = None
            raise CorruptFileError(
                f"{self.path}: no frame within {tolerance_s * 1e3:.1f} ms of t={target:.4f} s "
                f"(closest {best_gap:.4f} s away); the video is truncated or its timestamps are off"
            )
        if size is None:
            image = best.to_ndarray(format="rgb24")
        else:
            image = best.to_ndarray(format="rgb24", width=size[1], height=size[0], interpolation="BILINEAR")  # fmt: skip
        self._cache[(best_time, size)] = image
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image
