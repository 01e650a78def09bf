"""DeviceBatches: release-identical pixels, and exact, resumable per-epoch shuffling."""
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dataset.loader import DeviceBatches, ReleaseStyleDataset
from dataset.preprocess import load_task_tensors
from tests.helpers import make_sample, write_mixed_images

SIZE = 32
CPU = torch.device("cpu")


def numbered_images(count: int, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i and labelled i, so a batch tells which images it holds."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 3, size, size).clone()
    return images, torch.arange(count)


def epoch_labels(batches: DeviceBatches) -> list[int]:
    return [label for _, labels in batches for label in labels.tolist()]


@pytest.mark.parametrize("workers", [0, 2])
def test_served_batches_are_bit_identical_to_the_release_pipeline(tmp_path, workers):
    paths = write_mixed_images(tmp_path / "images")
    sample = make_sample(paths)
    tensors = load_task_tensors(tmp_path, sample, SIZE, cache_dir=None, workers=workers)
    reference = ReleaseStyleDataset(tmp_path, sample.train, SIZE)
    expected_images = torch.stack([reference[index][0] for index in range(len(reference))])
    expected_labels = torch.tensor([reference[index][1] for index in range(len(reference))])

    batches = DeviceBatches(tensors.train_images, tensors.train_labels, batch_size=4, device=CPU, shuffle=False)
    served = list(batches)
    images = torch.cat([batch for batch, _ in served])
    labels = torch.cat([label for _, label in served])

    assert [len(batch) for batch, _ in served] == [4, 2]
    assert images.dtype == torch.float32 and images.shape == (6, 3, SIZE, SIZE)
    assert torch.equal(images, expected_images)  # bit-identical, not merely within 1e-6
    assert torch.equal(labels, expected_labels)


def test_shuffled_batches_match_the_release_pipeline_image_by_image(tmp_path):
    paths = write_mixed_images(tmp_path / "images")
    sample = make_sample(paths, val_count=1)
    tensors = load_task_tensors(tmp_path, sample, SIZE, cache_dir=None, workers=0)
    reference = ReleaseStyleDataset(tmp_path, sample.train, SIZE)
    # labels 0..N-1 identify each image in the shuffled batches
    batches = DeviceBatches(tensors.train_images, torch.arange(len(sample.train)), 3, CPU, shuffle=True, seed=5)
    for images, indices in batches:
        for image, index in zip(images, indices.tolist()):
            assert torch.equal(image, reference[index][0])


def test_every_image_is_served_exactly_once_per_epoch_with_its_label():
    images, labels = numbered_images(10)
    batches = DeviceBatches(images, labels, batch_size=3, device=CPU, shuffle=True, seed=0)
    assert len(batches) == 4 and batches.num_images == 10
    for _ in range(3):
        served = list(batches)
        assert [len(labels) for _, labels in served] == [3, 3, 3, 1]
        assert sorted(label for _, labels in served for label in labels.tolist()) == list(range(10))
        for batch, batch_labels in served:
            pixel = (batch[:, 0, 0, 0] * 0.229 + 0.485) * 255  # undo the normalisation of channel 0
            assert torch.allclose(pixel, batch_labels.float(), atol=1e-3)


def test_shuffling_is_deterministic_for_a_seed_and_differs_across_epochs():
    images, labels = numbered_images(40)
    first = DeviceBatches(images, labels, 8, CPU, shuffle=True, seed=123)
    second = DeviceBatches(images, labels, 8, CPU, shuffle=True, seed=123)
    other_seed = DeviceBatches(images, labels, 8, CPU, shuffle=True, seed=124)
    epochs = [epoch_labels(first) for _ in range(3)]
    assert epochs == [epoch_labels(second) for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert epochs[0] != list(range(40))
    assert epoch_labels(other_seed) != epochs[0]


def test_restoring_the_generator_state_reproduces_the_next_epoch():
    images, labels = numbered_images(40)
    batches = DeviceBatches(images, labels, 8, CPU, shuffle=True, seed=7)
    epoch_labels(batches)
    saved = batches.generator.get_state()
    next_epoch = epoch_labels(batches)
    epoch_labels(batches)

    resumed = DeviceBatches(images, labels, 8, CPU, shuffle=True, seed=999)
    resumed.generator.set_state(saved)
    assert epoch_labels(resumed) == next_epoch


def test_unshuffled_batches_keep_order_and_the_last_partial_batch():
    images, labels = numbered_images(5)
    batches = DeviceBatches(images, labels, batch_size=2, device=CPU, shuffle=False)
    assert len(batches) == 3
    assert [labels.tolist() for _, labels in batches] == [[0, 1], [2, 3], [4]]
    assert epoch_labels(batches) == [0, 1, 2, 3, 4]


def test_bad_inputs_are_rejected():
    images, labels = numbered_images(4)
    with pytest.raises(ValueError, match=r"images must be uint8 \[N, 3, S, S\], got torch.float32"):
        DeviceBatches(images.float(), labels, 2, CPU, shuffle=False)
    with pytest.raises(ValueError, match=r"labels must be \[4\], got \(3,\)"):
        DeviceBatches(images, labels[:3], 2, CPU, shuffle=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        DeviceBatches(images, labels, 0, CPU, shuffle=False)


def test_release_style_dataset_is_the_release_transform_on_the_rgb_image(tmp_path):
    paths = write_mixed_images(tmp_path / "images")
    dataset = ReleaseStyleDataset(tmp_path, [(paths[1], 7)], SIZE)
    with Image.open(tmp_path / paths[1]) as file:  # CMYK JPEG
        expected = transforms.Compose([
            transforms.Resize((SIZE, SIZE)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])(file.convert("RGB"))
    image, label = dataset[0]
    assert len(dataset) == 1 and label == 7
    assert torch.equal(image, expected)


def test_a_trailing_batch_below_min_last_batch_is_skipped_and_the_rest_served_once():
    images = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).reshape(5, 3, 2, 2)
    labels = torch.arange(5)
    batches = DeviceBatches(images, labels, 2, torch.device("cpu"), shuffle=True, seed=3, min_last_batch=2)
    assert batches.num_images == 4 and len(batches) == 2
    left_out = set()
    for _ in range(8):
        served = torch.cat([batch_labels for _, batch_labels in batches]).tolist()
        assert [len(batch_labels) for _, batch_labels in batches] == [2, 2]
        assert len(served) == len(set(served)) == 4
        left_out |= set(range(5)) - set(served)
    assert len(left_out) > 1  # a different image sits out in different epochs, as DataLoader's drop_last does
    kept = DeviceBatches(images, labels, 2, torch.device("cpu"), shuffle=False)
    assert kept.num_images == 5 and [len(b) for _, b in kept] == [2, 2, 1]
