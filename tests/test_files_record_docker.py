"""Images verified by content, for real: the kit's inference image passes `images --verify`'s check, and
an image made from it with one file changed (a stand-in for a corrupted layer) fails it, naming that
file. Marked `docker`: under CI=true a missing daemon fails this test instead of skipping it."""

from __future__ import annotations

import io
import tarfile

import pytest

from coldchain.contract import Exit
from coldchain.environments.files_record import FILES_LABEL, raise_if_corrupt, verify_image
from coldchain.errors import ImageCorrupt

pytestmark = pytest.mark.docker

CHANGED = "/opt/coldchain/scripts/incontainer/__init__.py"


def derived_context(tmp_path, image_id: str):
    """FROM the kit image, one recorded file changed; the labels (its record's sha256) are inherited."""
    dockerfile = (f"FROM {image_id}\nUSER 0\nRUN echo '# changed after the record' >> {CHANGED}\n"
                  "USER 10001:10001\n").encode()
    context = tmp_path / "context.tar"
    with tarfile.open(context, "w") as archive:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile)
        archive.addfile(entry, io.BytesIO(dockerfile))
    return context


def test_a_built_image_verifies_and_one_with_a_changed_file_does_not(docker_engine, kit_images, run_id, tmp_path):
    infer = kit_images["infer"]
    assert infer.info.labels.get(FILES_LABEL)
    good = verify_image(docker_engine, infer.tag)
    assert good.files_ok and good.mismatches == (), good.mismatches
    tag = f"{run_id}-corrupted:infer"
    try:
        derived = docker_engine.build(derived_context(tmp_path, infer.info.id), dockerfile="Dockerfile", buildargs={},
                                      labels={}, tag=tag, log=lambda line: None)
        assert derived.labels[FILES_LABEL] == infer.info.labels[FILES_LABEL]  # the labels alone cannot tell
        bad = verify_image(docker_engine, tag)
        assert not bad.files_ok and bad.mismatches == (f"{CHANGED}: FAILED",)
        with pytest.raises(ImageCorrupt) as caught:
            raise_if_corrupt([good, bad])
        assert caught.value.exit_code == Exit.IMAGE_CORRUPT and CHANGED in caught.value.message
    finally:
        docker_engine.remove_image(tag)
