"""The DICOM confidentiality profile's attributes: the well-known ones are there, what the profile
keeps is not, and every element the test files plant an identifier in is covered."""

from __future__ import annotations

import io

import pydicom
import pytest
from dicom_helpers import (
    PLANTED,
    PLANTED_ELEMENTS,
    PLANTED_UIDS,
    PRIVATE_GROUP,
    ct_dicom,
    multiframe_dicom,
    ultrasound_jpeg_dicom,
)
from pydicom.datadict import keyword_dict, repeater_has_keyword
from pydicom.tag import Tag

from fedimage.privacy.dicom_profile import IDENTIFYING_KEYWORDS, is_identifying

WELL_KNOWN = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientAge",
    "PatientSex",
    "PatientWeight",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientMotherBirthName",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "StationName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "DeviceUID",
    "RequestingPhysician",
    "MedicalRecordLocator",
    "OverlayData",
    "CurveData",
]
KEPT = [
    "Modality",
    "BodyPartExamined",
    "Rows",
    "Columns",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelData",
    "NumberOfFrames",
    "RescaleSlope",
    "WindowCenter",
    "Manufacturer",
    "SOPClassUID",
    "TransferSyntaxUID",
    "BurnedInAnnotation",
]


@pytest.mark.parametrize("keyword", WELL_KNOWN)
def test_well_known_identifying_attributes_are_listed(keyword):
    assert keyword in IDENTIFYING_KEYWORDS and is_identifying(keyword)


@pytest.mark.parametrize("keyword", KEPT)
def test_what_the_profile_keeps_is_not_listed(keyword):
    assert keyword not in IDENTIFYING_KEYWORDS and not is_identifying(keyword)


def test_every_keyword_is_pydicoms():
    unknown = [k for k in IDENTIFYING_KEYWORDS if k not in keyword_dict and not repeater_has_keyword(k)]
    assert not unknown
    assert len(IDENTIFYING_KEYWORDS) >= 600  # the 2024b table lists 620


def test_tags_and_pairs_are_looked_up_and_private_tags_are_identifying():
    assert (
        is_identifying(0x00100020) and is_identifying(Tag("PatientName")) and is_identifying((0x0020, 0x000D))
    )
    assert not is_identifying(0x00280010) and not is_identifying((0x0008, 0x0060))  # Rows, Modality
    assert is_identifying(0x60023000) and is_identifying(0x50103000)  # overlay, curve data (repeating)
    for private in (0x00091001, 0x00090010, 0x00291010, 0x7FE10010, (0x0019, 0x10A0)):
        assert is_identifying(private)
    assert not is_identifying("NotAKeyword") and not is_identifying(0x00100011)  # no such element
    with pytest.raises(ValueError, match="not a DICOM tag"):
        is_identifying(-1)


def _elements(ds: pydicom.Dataset):
    yield from ds.iterall()
    yield from ds.file_meta


@pytest.mark.parametrize("build", [ct_dicom, multiframe_dicom, ultrasound_jpeg_dicom])
def test_every_element_the_test_files_plant_an_identifier_in_is_identifying(build):
    """The planted values sit only in elements the profile lists (or private ones): so a test
    that finds none of them in a store shows that the profile's elements stay out of it."""
    ds = pydicom.dcmread(io.BytesIO(build()))
    holding = {
        element.tag: element.keyword
        for element in _elements(ds)
        if isinstance(element.value, str | bytes | pydicom.valuerep.PersonName)
        and any(planted in str(element.value) for planted in PLANTED)
    }
    assert set(PLANTED_ELEMENTS) | set(PLANTED_UIDS) <= set(holding.values())
    assert any(tag.group == PRIVATE_GROUP for tag in holding)
    assert [keyword for tag, keyword in holding.items() if not is_identifying(tag)] == []
