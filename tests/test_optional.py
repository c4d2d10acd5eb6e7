"""The optional-part mechanism itself (tests/optional.py): skip with the install command, or fail
under JAXCL_REQUIRE_OPTIONAL=1."""
import pytest

from tests import optional


@pytest.fixture
def absent_part(monkeypatch):
  monkeypatch.setitem(optional.OPTIONAL, "absent", (lambda: True, "the absent part",
                                                     "pip install absent-part"))
  monkeypatch.setitem(optional.OPTIONAL, "present", (lambda: False, "a present part", "-"))


def test_missing_part_skips_naming_the_install_command(absent_part, monkeypatch):
  monkeypatch.delenv(optional.REQUIRE_ENV, raising=False)
  optional.require("present")  # nothing happens
  with pytest.raises(pytest.skip.Exception, match="the absent part not installed: pip install absent-part"):
    optional.require("present", "absent")


def test_missing_part_fails_when_optional_parts_are_required(absent_part, monkeypatch):
  monkeypatch.setenv(optional.REQUIRE_ENV, "1")
  optional.require("present")
  with pytest.raises(pytest.fail.Exception, match=r"pip install absent-part.*JAXCL_REQUIRE_OPTIONAL=1"):
    optional.require("absent")


def test_unknown_part_is_an_error():
  with pytest.raises(ValueError, match="unknown optional parts \\['wordnett'\\]"):
    optional.require("wordnett")
