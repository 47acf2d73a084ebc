"""CLI command groups; each module has `register(subparsers)`. `COMMANDS` lists them with the one line
`inspect-train --help` shows, so that the top-level help needs none of them imported."""

COMMANDS = {  # name -> (module, one-line help); the training tasks come from inspect_train.tasks.registry
    "data": ("data", "toy dataset, dataset checks, few-shot splits"),
    "gan": ("gan", "train a learned generator by hand (gan fit-...)"),
    "generate": ("generate", "write synthetic defect images, masks, paired good images and boxes"),
    "evaluate-gen": ("evaluate_gen", "judge generators against a partition's base set: mask statistics, a "
                     "real-vs-generated test, diversity, contact sheets (no pretrained weights needed)"),
    "predict": ("predict", "classify, segment or detect defects in new images with a trained model file"),
    "export": ("export", "write a model file as an ONNX or TorchScript graph giving probabilities (detectors: "
               "TorchScript, giving boxes)"),
}
BEFORE_TASKS = ("data", "gan", "generate")
