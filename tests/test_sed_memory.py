"SED streams a file of hours in memory that does not grow with it: FrameStream reuses one pair of buffers."
import numpy as np
import pytest
from audioset_nb.inference import FrameStream

class Keep:
    def __init__(self): self.chunks = []
    def frames(self, f0, chunk): self.chunks.append((f0, chunk.copy()))
    def end(self, n): self.n = n

def stitched(windows, n, classes):
    "The whole matrix `sed` makes: each frame the mean of the windows that cover it."
    s, c = np.zeros((n, classes), np.float32), np.zeros(n, np.float32)
    for f0, fw in windows:
        s[f0:f0 + len(fw)] += fw[:n - f0]
        c[f0:f0 + len(fw)] += 1
    return s/np.maximum(c, 1)[:, None]

@pytest.mark.parametrize('hop', [100, 50, 7])
def test_framestream_reuses_its_buffers_for_every_window(hop):
    rng = np.random.default_rng(0)
    windows = [(f0, rng.random((101, 6), dtype=np.float32)) for f0 in range(0, 60*hop, hop)]
    keep, s = Keep(), FrameStream()
    s.consumers = (keep,)
    s.add(*windows[0])
    first = s.sum
    for w in windows[1:]:
        s.add(*w)
        assert s.sum is first, 'a window made new buffers: memory churns with the length of the file'
    n = windows[-1][0] + 101
    s.result(n)
    got = np.concatenate([c for _, c in keep.chunks])
    np.testing.assert_array_equal(got, stitched(windows, n, 6))
    assert keep.n == n
