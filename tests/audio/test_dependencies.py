"""onestep-audio's stack loads beside the PyPI torch: torchaudio transforms, soundfile I/O."""

import numpy as np
import torch


def test_mel_spectrogram_and_wav_round_trip(tmp_path):
    import soundfile as sf
    import torchaudio

    sr = 16000
    wave = torch.sin(2 * torch.pi * 440 * torch.arange(sr) / sr).float()
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_mels=40)(wave)
    assert mel.shape[0] == 40 and torch.isfinite(mel).all()
    # The 440 Hz tone puts its energy in one low mel band, not spread evenly.
    assert mel.mean(-1).max() > 100 * mel.mean(-1).median()
    sf.write(tmp_path / "tone.wav", wave.numpy(), sr)
    back, back_sr = sf.read(tmp_path / "tone.wav", dtype="float32")
    assert back_sr == sr
    np.testing.assert_allclose(back, wave.numpy(), atol=1e-4)
