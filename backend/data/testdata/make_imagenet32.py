#!/usr/bin/python3
"""Writes the tiny ImageNet32-format files in this folder.

Run with Debian's python3 (it has numpy): /usr/bin/python3 make_imagenet32.py

Each file holds 3 images in the format of the downsampled-ImageNet 32x32
batch files: {'data': uint8 array 3 x 3072 (R, G, B planes of 32x32),
'labels': list of 1-based ints, 'mean': float64 array 3072}. Pixel k of
image i is (7*k + 31*i) % 256; the labels are 1, 1000, 17.
"""
import os
import pickle

import numpy as np

N = 3
here = os.path.dirname(os.path.abspath(__file__))
k = np.arange(3072, dtype=np.int64)
data = np.stack([(7 * k + 31 * i) % 256 for i in range(N)]).astype(np.uint8)
labels = [1, 1000, 17]
d = {'data': data, 'labels': labels, 'mean': data.mean(axis=0)}

for proto in (2, 3, 4, 5):
    with open(os.path.join(here, 'imagenet32_p%d.pkl' % proto), 'wb') as f:
        pickle.dump(d, f, protocol=proto)

# Labels as a numpy int64 array and as numpy scalars in a list.
with open(os.path.join(here, 'imagenet32_nplabels.pkl'), 'wb') as f:
    pickle.dump({'data': data, 'labels': np.array(labels, dtype='>i8')}, f, protocol=4)
with open(os.path.join(here, 'imagenet32_npscalars.pkl'), 'wb') as f:
    pickle.dump({'data': data, 'labels': [np.int64(y) for y in labels]}, f, protocol=2)

np.savez(os.path.join(here, 'imagenet32.npz'), data=data, labels=np.array(labels), mean=d['mean'])
np.savez_compressed(os.path.join(here, 'imagenet32_compressed.npz'), data=data, labels=np.array(labels, dtype=np.int32))
