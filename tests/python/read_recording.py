"""Reads a labhub recording with zarr-python and prints what it holds as one JSON document:
the root attributes, and per channel the group attributes, the frames array's dtype and shape,
the per-frame arrays and every frame cut to its own shape (flattened)."""

import json
import sys

import zarr

root = zarr.open_group(sys.argv[1], mode="r")
out = {"zarr": zarr.__version__, "attrs": dict(root.attrs), "channels": {}}
for name in root.attrs["channels"]:
    group = root[name]
    frames = group["frames"]
    shapes = group["shape"][:]
    channel = {
        "attrs": dict(group.attrs),
        "dtype": str(frames.dtype),
        "shape": list(frames.shape),
        "frame_id": group["frame_id"][:].tolist(),
        "timestamp_ns": group["timestamp_ns"][:].tolist(),
        "shapes": shapes.tolist(),
        "frames": [],
    }
    for i in range(frames.shape[0]):
        frame = frames[i]  # frame i, padded to the largest shape
        own = tuple(slice(0, int(d)) for d in shapes[i])
        channel["frames"].append(frame[own].flatten().tolist())
    out["channels"][name] = channel
print(json.dumps(out))
