# Writes mlp_28x28.onnx, a small untrained Fashion-MNIST-shaped classifier
# (1x28x28 in [0,1] -> 10 logits) exported by PyTorch, for the server's
# upload tests. Run with Debian's python3-torch and python3-onnx:
#   /usr/bin/python3 gen_onnx.py
import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Flatten(),
    torch.nn.Linear(28 * 28, 16),
    torch.nn.ReLU(),
    torch.nn.Linear(16, 10),
)
model.eval()
x = torch.rand(1, 1, 28, 28)
torch.onnx.export(model, x, "mlp_28x28.onnx", input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
