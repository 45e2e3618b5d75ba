"""Regenerate samples/demo.mp4: a public-domain face photo with synthetic speech.

The speech is espeak-ng reading a clearly positive sentence pair, then a clearly negative one; the
picture is NASA's public-domain portrait of astronaut Eileen Collins as shipped by scikit-image
(``skimage.data.astronaut()``). Output: H.264 + AAC, about 8 s, well under 1 MB.

Needs (only to regenerate; the project itself does not depend on them):
    - espeak-ng on PATH            (Debian/Ubuntu: apt-get install -y espeak-ng)
    - scikit-image importable      (pip install scikit-image, any environment)
    - ffmpeg: imageio-ffmpeg's binary (a project dependency) or ffmpeg on PATH

Usage:
    python samples/make_demo.py [--out samples/demo.mp4]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

# Spoken as two parts with a pause between them, so that the two sentiments are two utterances.
POSITIVE = "I love this wonderful new camera. It makes me so happy!"
NEGATIVE = "But the screen is terrible, and I am really disappointed."
SCRIPT = f"{POSITIVE} {NEGATIVE}"
VOICE = "en-us"
WORDS_PER_MINUTE = 175
PAD_S = 0.2  # silence before and after the speech
PAUSE_S = 0.8  # silence between the positive and the negative part
FPS = 25


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            sys.exit("make_demo: needs ffmpeg (pip install imageio-ffmpeg, or ffmpeg on PATH)")
        return found


def face_image() -> np.ndarray:
    """NASA's astronaut portrait, shape = (512, 512, 3), uint8 RGB."""
    try:
        from skimage import data
    except ImportError:
        sys.exit("make_demo: needs scikit-image for the face photo (pip install scikit-image)")
    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


def _espeak(text: str, wav_path: Path) -> tuple[np.ndarray, int]:
    """Speak ``text``; return (int16 samples, sample rate in Hz)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("make_demo: needs espeak-ng on PATH (apt-get install -y espeak-ng)")
    subprocess.run(
        [espeak, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav_path), text],
        check=True,
    )
    with wave.open(str(wav_path)) as speech:
        if speech.getnchannels() != 1 or speech.getsampwidth() != 2:
            sys.exit("make_demo: expected 16-bit mono speech from espeak-ng")
        samples = np.frombuffer(speech.readframes(speech.getnframes()), dtype=np.int16)
        return samples, speech.getframerate()


def synthesise_speech(wav_path: Path) -> float:
    """Write the positive part, a pause, the negative part to ``wav_path``; return seconds."""
    positive, rate_hz = _espeak(POSITIVE, wav_path)
    negative, _ = _espeak(NEGATIVE, wav_path)
    pause = np.zeros(int(PAUSE_S * rate_hz), dtype=np.int16)
    samples = np.concatenate([positive, pause, negative])
    with wave.open(str(wav_path), "wb") as speech:
        speech.setnchannels(1)
        speech.setsampwidth(2)
        speech.setframerate(rate_hz)
        speech.writeframes(samples.tobytes())
    return len(samples) / rate_hz


def encode(image: np.ndarray, wav_path: Path, duration_s: float, out: Path) -> None:
    """Loop the still image for ``duration_s`` under the padded speech; H.264 + AAC mp4."""
    height, width, _ = image.shape
    raw_path = wav_path.with_suffix(".rgb")
    raw_path.write_bytes(image.tobytes())
    delay_ms = int(PAD_S * 1000)
    command = [
        ffmpeg_exe(), "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-framerate", str(FPS), "-stream_loop", "-1", "-i", str(raw_path),
        "-i", str(wav_path),
        "-filter:a", f"adelay={delay_ms}:all=1,apad",
        "-t", f"{duration_s + 2 * PAD_S:.3f}",
        "-c:v", "libx264", "-preset", "slow", "-crf", "28", "-tune", "stillimage",
        "-pix_fmt", "yuv420p", "-threads", "1",
        "-c:a", "aac", "-b:a", "64k", "-ac", "1",
        "-map_metadata", "-1", "-fflags", "+bitexact",
        "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart",
        str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.mp4"))
    args = parser.parse_args()
    image = face_image()
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        duration_s = synthesise_speech(wav_path)
        encode(image, wav_path, duration_s, args.out)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({duration_s + 2 * PAD_S:.1f} s, {size_kb:.0f} KB)", file=sys.stderr)


if __name__ == "__main__":
    main()
