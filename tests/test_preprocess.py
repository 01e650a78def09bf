"""Parallel decode, its error report, and the on-disk cache of decoded tasks (reuse and invalidation)."""
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset.preprocess as preprocess
from dataset.images import open_rgb, resize_square
from dataset.preprocess import (TaskTensors, decode_images, default_workers, load_task_tensors, task_cache_key,
                                unreadable_images)
from common.errors import DatasetError
from tests.helpers import make_sample, noise, write_mixed_images

SIZE = 32


@pytest.fixture
def mixed(tmp_path):
    """A data root with mixed-mode images and a sample over them (6 train, 2 val)."""
    paths = write_mixed_images(tmp_path / "data" / "images")
    return tmp_path / "data", make_sample(paths)


def count_decodes(monkeypatch) -> list[int]:
    """Record the number of images each call to decode_images decodes."""
    calls = []
    real = preprocess.decode_images

    def counting(root, paths, size, workers, desc):
        calls.append(len(paths))
        return real(root, paths, size, workers, desc)

    monkeypatch.setattr(preprocess, "decode_images", counting)
    return calls


def warnings_in(capsys) -> list[str]:
    """The warning lines written to stderr since the last call (progress bars are also there)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]


def assert_same_tensors(left: TaskTensors, right: TaskTensors) -> None:
    for name in ("train_images", "train_labels", "val_images", "val_labels"):
        assert torch.equal(getattr(left, name), getattr(right, name)), name


def test_default_workers_is_one_per_core_up_to_eight():
    assert default_workers() == min(8, os.cpu_count())


def test_decode_resizes_every_mode_to_uint8_chw_and_workers_agree(mixed):
    root, sample = mixed
    paths = [path for path, _ in sample.train + sample.val]
    in_process = decode_images(root, paths, SIZE, workers=0, desc="test")
    parallel = decode_images(root, paths, SIZE, workers=2, desc="test")
    assert in_process.dtype == np.uint8 and in_process.shape == (8, 3, SIZE, SIZE)
    assert np.array_equal(in_process, parallel)
    for index, path in enumerate(paths):
        expected = np.asarray(resize_square(open_rgb(root / path), SIZE)).transpose(2, 0, 1)
        assert np.array_equal(in_process[index], expected), path


def test_decode_without_size_only_verifies(mixed):
    root, sample = mixed
    assert decode_images(root, [path for path, _ in sample.train], None, workers=2, desc="test") is None


def test_decode_of_no_images_is_empty(tmp_path):
    assert decode_images(tmp_path, [], SIZE, workers=2, desc="test").shape == (0, 3, SIZE, SIZE)


def write_broken_images(root) -> list[str]:
    """Two good images, then a missing one, a garbage file, a truncated JPEG and another missing one."""
    folder = root / "set"
    folder.mkdir(parents=True)
    Image.fromarray(noise(1, 20, 30)).save(folder / "good.png")
    Image.fromarray(noise(2, 64, 64)).save(folder / "whole.jpg")
    (folder / "garbage.jpg").write_bytes(b"not an image at all")
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:400])
    return ["set/good.png", "set/gone.png", "set/garbage.jpg", "set/whole.jpg", "set/truncated.jpg",
            "set/also_gone.png"]


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_failures_are_collected_into_one_error(tmp_path, workers):
    paths = write_broken_images(tmp_path)
    with pytest.raises(DatasetError) as raised:
        decode_images(tmp_path, paths, SIZE, workers=workers, desc="test")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"4 of 6 images under {tmp_path} cannot be read: set/gone.png: file not found; "
                              f"set/garbage.jpg: cannot identify image file ")
    assert "; set/truncated.jpg: " in message and message.endswith(" ...")
    assert "also_gone" not in message  # only the first three are named


def test_unreadable_images_lists_every_failure_in_order(tmp_path):
    paths = write_broken_images(tmp_path)
    failures = unreadable_images(tmp_path, paths, workers=2, desc="test")
    assert [path for path, _ in failures] == ["set/gone.png", "set/garbage.jpg", "set/truncated.jpg",
                                             "set/also_gone.png"]
    assert failures[0][1] == "file not found" and failures[3][1] == "file not found"
    assert "truncated" in failures[2][1].lower()


def crash_the_worker(job):
    os._exit(3)  # what a decoder segfault looks like to the pool


def test_a_worker_that_dies_is_an_error_not_a_hang(mixed, monkeypatch):
    root, sample = mixed
    monkeypatch.setattr(preprocess, "_decode_job", crash_the_worker)  # forked workers inherit the patch
    with pytest.raises(DatasetError, match=r"^a decode worker process died \(a decoder crashed on an image\); "
                                           r"decoding with 0 workers shows which image$"):
        decode_images(root, [path for path, _ in sample.train], SIZE, workers=2, desc="test")


def test_task_tensors_hold_the_decoded_splits_and_labels(mixed):
    root, sample = mixed
    tensors = load_task_tensors(root, sample, SIZE, cache_dir=None, workers=0)
    paths = [path for path, _ in sample.train + sample.val]
    decoded = torch.from_numpy(decode_images(root, paths, SIZE, workers=0, desc="test"))
    assert torch.equal(tensors.train_images, decoded[:6]) and torch.equal(tensors.val_images, decoded[6:])
    assert tensors.train_labels.tolist() == [0, 1, 2, 0, 1, 2] and tensors.val_labels.tolist() == [0, 1]
    assert tensors.train_labels.dtype == torch.int64


def test_second_load_reuses_the_cache_without_decoding(mixed, tmp_path, monkeypatch):
    root, sample = mixed
    cache = tmp_path / "cache"
    first = load_task_tensors(root, sample, SIZE, cache, workers=0)
    assert [entry.name for entry in cache.iterdir()] == [f"{task_cache_key(root, sample, SIZE)}.pt"]

    def no_decoding(*args):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(preprocess, "decode_images", no_decoding)
    assert_same_tensors(load_task_tensors(root, sample, SIZE, cache, workers=0), first)


def test_the_key_follows_manifest_size_and_root(mixed, tmp_path):
    root, sample = mixed
    key = task_cache_key(root, sample, SIZE)
    relabelled = replace(sample, train=((sample.train[0][0], 2),) + sample.train[1:])
    reordered = replace(sample, train=sample.train[::-1])
    assert key == task_cache_key(root, replace(sample, task=replace(sample.task, name="renamed")), SIZE)
    assert len({key, task_cache_key(root, relabelled, SIZE), task_cache_key(root, reordered, SIZE),
                task_cache_key(root, sample, 64), task_cache_key(tmp_path, sample, SIZE)}) == 5


def test_a_data_root_whose_name_is_not_utf8_is_cached(tmp_path):
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/d\xe9ta"))  # names inside the data are refused elsewhere
    sample = make_sample(write_mixed_images(root / "images"))
    cache = tmp_path / "cache"
    first = load_task_tensors(root, sample, SIZE, cache, workers=0)
    assert [entry.name for entry in cache.iterdir()] == [f"{task_cache_key(root, sample, SIZE)}.pt"]
    assert_same_tensors(first, load_task_tensors(root, sample, SIZE, cache_dir=None, workers=0))


def test_a_changed_manifest_is_decoded_again(mixed, tmp_path, monkeypatch):
    root, sample = mixed
    cache = tmp_path / "cache"
    load_task_tensors(root, sample, SIZE, cache, workers=0)
    decodes = count_decodes(monkeypatch)
    smaller = replace(sample, train=sample.train[:4])
    tensors = load_task_tensors(root, smaller, SIZE, cache, workers=0)
    assert decodes == [6] and tensors.train_images.shape[0] == 4
    assert len(list(cache.iterdir())) == 2


def test_a_touched_image_is_decoded_again(mixed, tmp_path, monkeypatch):
    root, sample = mixed
    cache = tmp_path / "cache"
    load_task_tensors(root, sample, SIZE, cache, workers=0)
    decodes = count_decodes(monkeypatch)
    image = root / sample.val[0][0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_task_tensors(root, sample, SIZE, cache, workers=0)
    load_task_tensors(root, sample, SIZE, cache, workers=0)
    assert decodes == [8]  # the second load after the touch reuses the new entry


def test_an_edited_image_gives_its_new_pixels(mixed, tmp_path):
    root, sample = mixed
    cache = tmp_path / "cache"
    before = load_task_tensors(root, sample, SIZE, cache, workers=0)
    edited = root / sample.train[2][0]  # rgba.png
    Image.fromarray(np.zeros((20, 50, 4), dtype=np.uint8) + 200, "RGBA").save(edited)
    after = load_task_tensors(root, sample, SIZE, cache, workers=0)
    assert not torch.equal(before.train_images[2], after.train_images[2])
    assert torch.equal(after.train_images[2], torch.full((3, SIZE, SIZE), 200, dtype=torch.uint8))
    assert torch.equal(before.train_images[:2], after.train_images[:2])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_cache_entry_is_reported_and_rebuilt(mixed, tmp_path, capsys, damage):
    root, sample = mixed
    cache = tmp_path / "cache"
    expected = load_task_tensors(root, sample, SIZE, cache, workers=0)
    entry = cache / f"{task_cache_key(root, sample, SIZE)}.pt"
    good_bytes = entry.read_bytes()
    entry.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else good_bytes[:len(good_bytes) // 2])
    capsys.readouterr()

    rebuilt = load_task_tensors(root, sample, SIZE, cache, workers=0)

    [warning] = warnings_in(capsys)
    assert warning.startswith(f"warning: cache entry {entry} is unreadable (") and warning.endswith("); rebuilding it")
    assert_same_tensors(rebuilt, expected)
    assert entry.read_bytes() == good_bytes


def test_an_inconsistent_cache_entry_is_reported_and_rebuilt(mixed, tmp_path, capsys):
    root, sample = mixed
    cache = tmp_path / "cache"
    expected = load_task_tensors(root, sample, SIZE, cache, workers=0)
    entry = cache / f"{task_cache_key(root, sample, SIZE)}.pt"
    wrong_labels = {"train_images": expected.train_images.clone(), "train_labels": expected.train_labels + 1,
                    "val_images": expected.val_images.clone(), "val_labels": expected.val_labels}
    torch.save(wrong_labels, entry)
    capsys.readouterr()

    rebuilt = load_task_tensors(root, sample, SIZE, cache, workers=0)

    assert warnings_in(capsys) == [
        f"warning: cache entry {entry} is inconsistent (train labels differ); rebuilding it"]
    assert_same_tensors(rebuilt, expected)
    torch.save({**wrong_labels, "train_labels": expected.train_labels, "val_images": expected.val_images[:1]}, entry)
    load_task_tensors(root, sample, SIZE, cache, workers=0)
    assert warnings_in(capsys) == [
        f"warning: cache entry {entry} is inconsistent (val images are torch.uint8 (1, 3, 32, 32)); rebuilding it"]


def test_an_unwritable_cache_only_warns(mixed, tmp_path, capsys):
    root, sample = mixed
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    tensors = load_task_tensors(root, sample, SIZE, blocker, workers=0)
    assert tensors.train_images.shape == (6, 3, SIZE, SIZE)
    [warning] = warnings_in(capsys)
    assert warning.startswith(f"warning: cannot write cache entry {blocker}/")
