"""The server of ``medlite serve`` on the shipped LiteSAM and one shipped classifier, exported once per run."""

from __future__ import annotations

import pytest

from medlite import zoo
from medlite.serve.app import Server, create_app
from medlite.serve.models import export_classifier_cached, export_sam_cached, weights_key

SAM = "litesam_swin_xs_distilled"
CLASSIFIER = "medlit_nano_28_breastmnist"


@pytest.fixture(scope="session")
def graphs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    sam = export_sam_cached(*zoo.load(SAM), SAM, weights_key(SAM), cache)
    clf = export_classifier_cached(*zoo.load(CLASSIFIER), CLASSIFIER, weights_key(CLASSIFIER), cache)
    return sam, {CLASSIFIER: clf}


@pytest.fixture
def server(graphs):
    return Server(graphs[0], graphs[1], threads=1, max_upload_mb=2, sam_name=SAM)


@pytest.fixture
def client(server):
    from fastapi.testclient import TestClient

    return TestClient(create_app(server), base_url="http://127.0.0.1:8765")
