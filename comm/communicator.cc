#include "comm/communicator.h"

namespace primal {

size_t data_type_size(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
      return 8;
    case DataType::kInt64:
      return 8;
  }
  return 0;
}

const char* reduce_op_name(ReduceOp op) {
  return op == ReduceOp::kSum ? "sum" : "average";
}

bool any_rank(Communicator& comm, bool failed) {
  int64_t n = failed ? 1 : 0;
  comm.all_reduce(&n, 1, ReduceOp::kSum);
  return n > 0;
}

}  // namespace primal
