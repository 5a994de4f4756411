"""onestep-video's stack: torchvision next to the PyPI torch, PyAV writes and reads an mp4."""

import numpy as np


def test_write_and_read_an_mp4(tmp_path):
    import av
    import torchvision  # noqa: F401  (must import beside torch; it fails beside the CPU-only build)

    path = str(tmp_path / "clip.mp4")
    frames = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    frames[:, :, :16] = 255  # left half white
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    with av.open(path) as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(decoded) == 8
    assert decoded[0][:, :12].mean() > 200 and decoded[0][:, 20:].mean() < 50
