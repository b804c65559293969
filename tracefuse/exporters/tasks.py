"""Tasks: which Transformers Auto class builds a model for a task, and inferring the task from a config."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tracefuse.errors import SourceError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A task name, the Auto class that builds its model, and the auto mapping that lists its classes."""

    name: str
    auto_class: str
    mapping: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "AutoModel", "MODEL_MAPPING_NAMES"),
        Task("text-classification", "AutoModelForSequenceClassification",
             "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
        Task("token-classification", "AutoModelForTokenClassification",
             "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
        Task("question-answering", "AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
        Task("fill-mask", "AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
        Task("image-classification", "AutoModelForImageClassification",
             "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
        Task("text-generation", "AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
        Task("text2text-generation", "AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
        Task("automatic-speech-recognition", "AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
        Task("ctc", "AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
        Task("audio-classification", "AutoModelForAudioClassification",
             "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
        Task("semantic-segmentation", "AutoModelForSemanticSegmentation",
             "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
        Task("object-detection", "AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
        Task("zero-shot-image-classification", "AutoModelForZeroShotImageClassification",
             "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    )
}
# automatic-speech-recognition on a model with no encoder-decoder class (wav2vec2, hubert…) uses its CTC head.
_FALLBACK = {"automatic-speech-recognition": "ctc"}


def get_task(name: str) -> Task:
    """The task called `name`; raises SourceError listing the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise SourceError(
            f"unknown task '{name}'", found=name, fix=f"use one of: {', '.join(sorted(TASKS))}"
        ) from None


def _mapping(task: Task) -> dict[str, object]:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, task.mapping)


def supports(task: Task, model_type: str) -> bool:
    """Whether Transformers has a model class for this task and model type."""
    return model_type in _mapping(task)


def infer_task(model_type: str, architectures: list[str] | None) -> str:
    """The task of a checkpoint, read from `config.architectures`; feature-extraction when unknown."""
    for arch in architectures or []:
        for task in TASKS.values():
            classes = _mapping(task).get(model_type)
            names = classes if isinstance(classes, (list, tuple)) else [classes]
            if arch in names:
                logger.info("task inferred from architectures=%s: %s", architectures, task.name)
                return task.name
    return "feature-extraction"


def _resolve(task: Task, model_type: str) -> Task:
    fallback = TASKS.get(_FALLBACK.get(task.name, ""))
    if not supports(task, model_type) and fallback is not None and supports(fallback, model_type):
        logger.info("%s has no %s class for %s; using %s", model_type, task.auto_class, task.name, fallback.auto_class)
        task = fallback
    if not supports(task, model_type):
        have = [t.name for t in TASKS.values() if supports(t, model_type)]
        raise SourceError(
            f"model type '{model_type}' has no Transformers class for task '{task.name}'",
            fix=f"use one of the tasks it supports: {', '.join(have) or 'none'}",
        )
    return task


def auto_class(task: Task, model_type: str):
    """The Transformers Auto class for the task, after checking it covers `model_type`."""
    import transformers

    return getattr(transformers, _resolve(task, model_type).auto_class)


def default_architecture(task: Task, model_type: str) -> str:
    """The model class name the task builds for `model_type`: the first when Transformers lists several
    (deit, levit: with and without a distillation head), which `from_config` cannot choose by itself."""
    classes = _mapping(_resolve(task, model_type))[model_type]
    return classes[0] if isinstance(classes, (list, tuple)) else classes
