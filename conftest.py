"""Names the runnable examples in edgellm's docstrings take as given (collected with
--doctest-modules): `model` is the shipped text model, as the class docstrings load it."""

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _doctest_names(doctest_namespace):
    import edgellm

    doctest_namespace.update(edgellm=edgellm, np=np, model=edgellm.load("shakespeare"))
