"""The DICOM attributes that may identify a patient: those of the confidentiality profile.

DICOM PS3.15 Annex E ("Attribute Confidentiality Profiles"), Table E.1-1, lists every standard
attribute that the Basic Application Level Confidentiality Profile removes, empties, replaces
or remaps (actions D, Z, X, U and their combinations) because it identifies, or helps identify,
a patient, a clinician, an institution, a device or a time: names, IDs, addresses, birth and
study dates and times, free-text descriptions and comments, and every instance UID.
:data:`IDENTIFYING_KEYWORDS` is that table (edition 2024b, 620 attributes), by the keywords
pydicom gives them (``PatientName`` for *Patient's Name* (0010,0010)); the repeating groups
*Overlay Data* and *Overlay Comments* (60xx) and *Curve Data* (50xx) appear by their keyword. The
profile also removes every private attribute (odd group number) unless a site vouches for it
(its Retain Safe Private option): :func:`is_identifying` says so for any tag of an odd group.

What the profile keeps is not listed: *Modality*, *Body Part Examined*, *Rows*, *Columns*,
*Photometric Interpretation*, *Manufacturer*, *SOP Class UID*. A source that takes users or
labels from tags reads identifying values; a store must keep none of them.

Example::

    is_identifying("PatientID")  # True
    is_identifying("Modality")  # False
    is_identifying(0x00091001)  # True: a private tag (group 0x0009 is odd)
"""

from __future__ import annotations

#: The keywords of the attributes PS3.15 Table E.1-1 lists (edition 2024b), as pydicom names them.
IDENTIFYING_KEYWORDS: frozenset[str] = frozenset(
    """
    AccessionNumber AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
    AcquisitionDeviceProcessingDescription AcquisitionFieldOfViewLabel AcquisitionProtocolDescription
    AcquisitionTime AcquisitionUID ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial
    AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
    AffectedSOPInstanceUID Allergies AnnotationGroupDescription AnnotationGroupLabel AnnotationGroupUID
    ApprovalStatusDateTime Arbitrary AssertionDateTime AssertionExpirationDateTime
    AttributeModificationDateTime AuthorObserverSequence BarcodeValue BeamDescription
    BeamHoldTransitionDateTime BolusDescription BranchOfService CalibrationDate CalibrationDateTime
    CalibrationTime CameraOwnerName CassetteID CertificateOfSigner CertifiedTimestamp
    ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolEthicsCommitteeApprovalNumber
    ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialProtocolName
    ClinicalTrialSeriesDescription ClinicalTrialSeriesID ClinicalTrialSiteID ClinicalTrialSiteName
    ClinicalTrialSponsorName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
    ClinicalTrialTimePointDescription ClinicalTrialTimePointID CommentsOnRadiationDose
    CommentsOnThePerformedProcedureStep CompensatorDescription ConcatenationUID
    ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConceptualVolumeUID
    ConfidentialityConstraintOnPatientDataDescription ConstituentConceptualVolumeUID
    ConsultingPhysicianIdentificationSequence ConsultingPhysicianName ContainerComponentID
    ContainerDescription ContainerIdentifier ContentCreatorIdentificationCodeSequence ContentCreatorName
    ContentDate ContentSequence ContentTime ContextGroupLocalVersion ContextGroupVersion
    ContrastBolusAgent ContrastBolusStartTime ContrastBolusStopTime ContributionDateTime
    ContributionDescription CountryOfResidence CreationDate CreationTime CurrentObserverTrial
    CurrentPatientLocation CurveData CurveDate CurveTime CustodialOrganizationSequence
    DataSetTrailingPadding Date DateOfDocumentOrVerbalTransactionTrial DateOfInstallation
    DateOfLastCalibration DateOfLastDetectorCalibration DateOfManufacture DateOfSecondaryCapture
    DateTime DateTimeOfLastCalibration DecayCorrectionDateTime DecompositionDescription
    DerivationDescription DestinationAE DetectorID DeviceAlternateIdentifier DeviceDescription
    DeviceLabel DeviceSerialNumber DeviceSettingDescription DeviceUID DigitalSignatureDateTime
    DigitalSignatureUID DigitalSignaturesSequence DimensionOrganizationUID DischargeDate
    DischargeDiagnosisDescription DischargeTime DisplacementReferenceLabel DistributionAddress
    DistributionName DoseReferenceDescription DoseReferenceUID DosimetricObjectiveUID EffectiveDateTime
    EncapsulatedDocument EndAcquisitionDateTime EntityDescription EntityLabel EntityLongLabel EntityName
    EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
    EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup ExclusionStartDateTime
    ExpectedCompletionDateTime FailedSOPInstanceUIDList FiducialUID
    FillerOrderNumberImagingServiceRequest FilterLookupTableDescription FindingsGroupRecordingDateTrial
    FindingsGroupRecordingTimeTrial FirstTreatmentDate FixationDeviceDescription FlowIdentifier
    FlowIdentifierSequence FractionGroupDescription FractionationNotes FrameAcquisitionDateTime
    FrameComments FrameOfReferenceUID FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse
    GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef
    GPSDestDistance GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude
    GPSDestLongitudeRef GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef
    GPSLongitude GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed
    GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID
    GraphicAnnotationSequence HL7DocumentEffectiveTime HangingProtocolCreationDateTime
    HumanPerformerName HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
    ImagePresentationComments ImagingServiceRequestComments ImpedanceMeasurementDateTime Impressions
    InformationIssueDateTime InstanceCoercionDateTime InstanceCreationDate InstanceCreationTime
    InstanceCreatorUID InstanceOriginStatus InstitutionAddress InstitutionCodeSequence InstitutionName
    InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence InstructionPerformedDateTime
    InsurancePlanIdentification IntendedFractionStartTime IntendedPhaseEndDate IntendedPhaseStartDate
    IntendedRecipientsOfResultsIdentificationSequence InterlockDateTime InterlockDescription
    InterlockOriginDescription InterpretationApprovalDate InterpretationApprovalTime
    InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
    InterpretationID InterpretationIDIssuer InterpretationRecordedDate InterpretationRecordedTime
    InterpretationRecorder InterpretationText InterpretationTranscriber InterpretationTranscriptionDate
    InterpretationTranscriptionTime InterventionDrugStartTime InterventionDrugStopTime
    IrradiationEventUID IssueDateOfImagingServiceRequest IssueTimeOfImagingServiceRequest
    IssuerOfAdmissionID IssuerOfAdmissionIDSequence IssuerOfClinicalTrialProtocolID
    IssuerOfClinicalTrialSeriesID IssuerOfClinicalTrialSiteID IssuerOfClinicalTrialSubjectID
    IssuerOfClinicalTrialSubjectReadingID IssuerOfClinicalTrialTimePointID IssuerOfPatientID
    IssuerOfServiceEpisodeID IssuerOfServiceEpisodeIDSequence IssuerOfTheContainerIdentifierSequence
    IssuerOfTheSpecimenIdentifierSequence LabelText LargePaletteColorLookupTableUID LastMenstrualDate
    LensMake LensModel LensSerialNumber LensSpecification LongDeviceDescription MAC MakerNote
    ManufacturerDeviceClassUID ManufacturerDeviceIdentifier MediaStorageSOPInstanceUID MedicalAlerts
    MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDate
    ModifiedImageDescription ModifiedImageTime ModifyingDeviceID ModifyingSystem MostRecentTreatmentDate
    MultienergyAcquisitionDescription MultiplexGroupUID NameOfPhysiciansReadingStudy
    NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
    NonconformingModifiedAttributesSequence ObservationDateTime ObservationDateTrial
    ObservationStartDateTime ObservationSubjectUIDTrial ObservationTimeTrial ObservationUID Occupation
    OperatorIdentificationSequence OperatorsName OrderCallbackPhoneNumber
    OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation OriginalAttributesSequence
    Originator OtherClinicalTrialProtocolIDsSequence OtherPatientIDs OtherPatientIDsSequence
    OtherPatientNames OverlayComments OverlayData OverlayDate OverlayTime OverrideDateTime
    PaletteColorLookupTableUID ParticipantSequence ParticipationDateTime PatientAddress PatientAge
    PatientBirthDate PatientBirthName PatientBirthTime PatientComments PatientID
    PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName
    PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientSetupPhotoDescription PatientSetupUID PatientSex
    PatientSexNeutered PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers
    PatientTransportArrangements PatientTreatmentPreparationMethodDescription
    PatientTreatmentPreparationProcedureParameterDescription PatientWeight PerformedLocation
    PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndDateTime
    PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
    PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
    PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress
    PersonIdentificationCodeSequence PersonName PersonTelecomInformation PersonTelephoneNumbers
    PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
    PhysiciansReadingStudyIdentificationSequence PlacerOrderNumberImagingServiceRequest PlateID
    PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication PregnancyStatus
    PrescriptionDescription PrescriptionNotes PrescriptionNotesSequence PresentationCreationDate
    PresentationCreationTime PresentationDisplayCollectionUID PresentationSequenceCollectionUID
    PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProductExpirationDateTime
    ProtocolName PyramidDescription PyramidLabel PyramidUID ROICreatorSequence ROIDateTime
    ROIDescription ROIGenerationDescription ROIInterpreter ROIInterpreterSequence ROIName
    ROIObservationDateTime ROIObservationDescription ROIObservationLabel RTAccessoryDeviceSlotID
    RTAccessoryHolderSlotID RTPhysicianIntentNarrative RTPlanDate RTPlanDescription RTPlanLabel
    RTPlanName RTPlanTime RTPrescriptionLabel RTToleranceSetLabel RTTreatmentApproachLabel
    RTTreatmentPhaseUID RadiationDoseIdentificationLabel RadiationDoseInVivoMeasurementLabel
    RadiationGenerationModeDescription RadiationGenerationModeLabel RadiopharmaceuticalStartDateTime
    RadiopharmaceuticalStartTime RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime
    ReasonForOmissionDescription ReasonForRequestedProcedureCodeSequence ReasonForStudy
    ReasonForSuperseding ReasonForTheAttributeModification ReasonForTheImagingServiceRequest
    ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence ReceivingAE
    RecordedRTControlPointDateTime ReferencedConceptualVolumeUID ReferencedDateTime
    ReferencedDigitalSignatureSequence ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID
    ReferencedFiducialsUID ReferencedFrameOfReferenceUID
    ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedImageSequence
    ReferencedObservationUIDTrial ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
    ReferencedPatientSequence ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceMACSequence
    ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedStudySequence
    ReferencedTreatmentPositionGroupUID ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianName ReferringPhysicianTelephoneNumbers
    RegionOfResidence RelatedFrameOfReferenceUID RequestAttributesSequence RequestedContrastAgent
    RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID
    RequestedProcedureLocation RequestedSOPInstanceUID RequestedSeriesDescription RequestingAE
    RequestingPhysician RequestingService RespiratoryMotionCompensationTechniqueDescription
    ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsID
    ResultsIDIssuer RetrieveAETitle ReviewDate ReviewTime ReviewerName SOPAuthorizationDateTime
    SOPInstanceUID SafePositionExitDate SafePositionExitTime SafePositionReturnDate
    SafePositionReturnTime ScheduledAdmissionDate ScheduledAdmissionTime ScheduledDischargeDate
    ScheduledDischargeTime ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID ScheduledProcedureStepLocation
    ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
    ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
    ScheduledStudyLocation ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
    ScheduledStudyStopDate ScheduledStudyStopTime SelectorAEValue SelectorASValue SelectorDAValue
    SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue SelectorSHValue
    SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue SeriesDate
    SeriesDescription SeriesInstanceUID SeriesTime ServiceEpisodeDescription ServiceEpisodeID
    SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier SmokingStatus
    SourceConceptualVolumeUID SourceEndDateTime SourceFrameOfReferenceUID SourceIdentifier
    SourceImageSequence SourceManufacturer SourceOfPreviousValues SourceSerialNumber SourceStartDateTime
    SourceStrengthReferenceDate SourceStrengthReferenceTime SpecialNeeds SpecimenAccessionNumber
    SpecimenDetailedDescription SpecimenIdentifier SpecimenPreparationSequence SpecimenShortDescription
    SpecimenUID StartAcquisitionDateTime StationAETitle StationName StorageMediaFileSetUID
    StructureSetDate StructureSetDescription StructureSetLabel StructureSetName StructureSetTime
    StudyArrivalDate StudyArrivalTime StudyComments StudyCompletionDate StudyCompletionTime StudyDate
    StudyDescription StudyID StudyIDIssuer StudyInstanceUID StudyReadDate StudyReadTime StudyTime
    StudyVerifiedDate StudyVerifiedTime SubstanceAdministrationDateTime
    SynchronizationFrameOfReferenceUID TargetUID TelephoneNumberTrial TemplateExtensionCreatorUID
    TemplateExtensionOrganizationUID TemplateLocalVersion TemplateVersion TextComments TextString Time
    TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration TimeOfLastDetectorCalibration
    TimeOfSecondaryCapture TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle
    TrackingUID TransactionUID TransducerIdentificationSequence TreatmentControlPointDate
    TreatmentControlPointTime TreatmentDate TreatmentMachineName TreatmentPositionGroupLabel
    TreatmentPositionGroupUID TreatmentSessionUID TreatmentSite TreatmentSites TreatmentTechniqueNotes
    TreatmentTime TreatmentToleranceViolationDateTime TreatmentToleranceViolationDescription UDISequence
    UID UniqueDeviceIdentifier UserContentLabel UserContentLongLabel
    VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial VerificationDateTime
    VerifyingObserverIdentificationCodeSequence VerifyingObserverName VerifyingObserverSequence
    VerifyingOrganization VisitComments WaveformFilterDescription XRayDetectorID XRayDetectorLabel
    XRaySourceID
    """.split()  # noqa: SIM905 (620 keywords read better as words than as a 620-line literal)
)


def is_identifying(keyword_or_tag: str | int | tuple[int, int]) -> bool:
    """Whether the profile removes or replaces this attribute, given its keyword, its tag
    (``0x00100020`` or a pydicom ``BaseTag``) or a ``(group, element)`` pair.

    Private tags (odd groups) are identifying. A keyword is looked up in
    :data:`IDENTIFYING_KEYWORDS` (a private attribute has none); a standard tag is named by
    pydicom's dictionary (the ``dicom`` extra), repeating groups (60xx, 50xx) included.

        is_identifying("StudyInstanceUID")  # True
        is_identifying((0x0028, 0x0010))  # False: Rows
    """
    if isinstance(keyword_or_tag, str):
        return keyword_or_tag in IDENTIFYING_KEYWORDS
    if isinstance(keyword_or_tag, tuple):
        group, element = keyword_or_tag
        tag = (int(group) << 16) | int(element)
    else:
        tag = int(keyword_or_tag)
    if not 0 <= tag <= 0xFFFFFFFF:
        raise ValueError(f"not a DICOM tag: {keyword_or_tag!r}")
    if (tag >> 16) % 2 == 1:
        return True
    from fedimage.imaging.dicom import require_pydicom

    return require_pydicom("pydicom.datadict").keyword_for_tag(tag) in IDENTIFYING_KEYWORDS
