// coldchain's custom op for the drift test: temperature scaling of logits (post-hoc calibration),
// a real C++ kernel compiled against the training image's TensorFlow headers.
//
// The library embeds the TF version it was compiled against as a plain string, so a doctor can
// read it from the file without loading it: TensorFlow's C++ ABI changes between releases, and a
// library built for one version typically fails to load in another with `undefined symbol`.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/public/version.h"

namespace coldchain {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

extern "C" __attribute__((used, visibility("default")))
const char coldchain_op_library_marker[] =
    "coldchain-op-library:tensorflow=" TF_STR(TF_MAJOR_VERSION) "." TF_STR(TF_MINOR_VERSION) "."
    TF_STR(TF_PATCH_VERSION) TF_VERSION_SUFFIX ";ops=ColdchainTemperatureScale;";

REGISTER_OP("ColdchainTemperatureScale")
    .Input("logits: float")
    .Output("scaled: float")
    .Attr("temperature: float = 1.0")
    .SetShapeFn(::tensorflow::shape_inference::UnchangedShape)
    .Doc("Divides logits by a fixed temperature (post-hoc calibration).");

class TemperatureScaleOp : public OpKernel {
 public:
  explicit TemperatureScaleOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("temperature", &temperature_));
    OP_REQUIRES(context, temperature_ > 0.0f,
                ::tensorflow::errors::InvalidArgument("temperature must be > 0, got ", temperature_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    const auto in = input.flat<float>();
    auto out = output->flat<float>();
    const float inverse = 1.0f / temperature_;
    for (int64_t i = 0; i < in.size(); ++i) out(i) = in(i) * inverse;
  }

 private:
  float temperature_;
};

REGISTER_KERNEL_BUILDER(Name("ColdchainTemperatureScale").Device(DEVICE_CPU), TemperatureScaleOp);

}  // namespace coldchain
