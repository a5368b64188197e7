// medmae c10d shim: the narrow `extern "C"` surface that lets Rust drive PyTorch's own c10d
// (TCPStore rendezvous + ProcessGroupGloo, or ProcessGroupNCCL with MEDMAE_WITH_NCCL).
//
// Conventions (mirrored in distributed/src/ffi.rs):
// - every fallible function returns NULL on success, or a malloc'd NUL-terminated error message that the
//   caller must release with medmae_c10d_free_error; no C++ exception ever crosses the FFI boundary;
// - tensors cross as `at::Tensor*`, which is exactly what tch's `Tensor::as_ptr()` returns
//   (`torch_sys::C_tensor` is the opaque name torch-sys gives to `at::Tensor`);
// - collectives are synchronous: they wait for the c10d Work to finish (or fail, or time out).

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#ifdef MEDMAE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

// One initialised process group: the store must outlive the backend, which talks through it.
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
  std::chrono::milliseconds timeout;
};

char* dup_message(const std::string& msg) {
  char* out = static_cast<char*>(std::malloc(msg.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, msg.c_str(), msg.size() + 1);
  }
  return out;
}

// Runs `body`, translating any C++ exception into an error string (c10 errors without their C++ backtrace).
template <typename F>
char* guarded(const char* what, F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_message(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_message(std::string(what) + ": " + e.what());
  } catch (...) {
    return dup_message(std::string(what) + ": unknown C++ exception");
  }
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// Picks the network device Gloo binds to: loopback for single-node test runs, GLOO_SOCKET_IFNAME when the
// user names an interface (same variable as PyTorch), otherwise the address this host name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (is_loopback(master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && ifname[0] != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < ranks.size(); ++i) {
    out << (i ? ", " : "") << ranks[i];
  }
  out << "]";
  return out.str();
}

// Every rank announces itself in the store, then waits for all others; on timeout the error lists the ranks
// that never arrived, which is what an operator needs to find the missing node.
void join_barrier(c10d::Store& store, int rank, int size,
                  std::chrono::milliseconds timeout) {
  const std::string prefix = "medmae/joined/";
  store.set(prefix + std::to_string(rank), std::vector<uint8_t>{1});
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) {
    keys.push_back(prefix + std::to_string(r));
  }
  try {
    store.wait(keys, timeout);
  } catch (const c10::Error&) {
    std::vector<int> missing;
    for (int r = 0; r < size; ++r) {
      if (!store.check({keys[r]})) {
        missing.push_back(r);
      }
    }
    std::ostringstream msg;
    msg << "timed out after " << timeout.count() << " ms waiting for rank(s) " << join_ranks(missing) << " of "
        << size << " to join";
    throw std::runtime_error(msg.str());
  }
}

void wait_work(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

at::Tensor& as_tensor(void* ptr, size_t index) {
  if (ptr == nullptr) {
    throw std::invalid_argument("tensor " + std::to_string(index) + " is a null pointer");
  }
  at::Tensor& t = *static_cast<at::Tensor*>(ptr);
  if (!t.defined()) {
    throw std::invalid_argument("tensor " + std::to_string(index) + " is undefined");
  }
  if (t.is_sparse()) {
    throw std::invalid_argument("tensor " + std::to_string(index) + " is sparse; only dense tensors are supported");
  }
  return t;
}

// Splits `tensors` into runs of equal dtype/device whose byte size stays under `cap` (a larger tensor gets a
// bucket of its own) and calls `reduce(flat)` once per bucket on the flattened concatenation, then copies
// the result back. This is PyTorch DDP's gradient bucketing without the overlap with backward.
template <typename F>
void for_each_bucket(std::vector<at::Tensor*>& tensors, int64_t cap, F&& reduce) {
  at::NoGradGuard no_grad;
  size_t start = 0;
  while (start < tensors.size()) {
    at::Tensor& first = *tensors[start];
    size_t end = start + 1;
    int64_t bytes = first.numel() * static_cast<int64_t>(first.element_size());
    while (end < tensors.size()) {
      at::Tensor& t = *tensors[end];
      int64_t next = t.numel() * static_cast<int64_t>(t.element_size());
      if (t.scalar_type() != first.scalar_type() || t.device() != first.device() || bytes + next > cap) {
        break;
      }
      bytes += next;
      ++end;
    }
    if (end - start == 1 && first.is_contiguous()) {
      reduce(first);
    } else {
      std::vector<at::Tensor> flat_parts;
      for (size_t i = start; i < end; ++i) {
        flat_parts.push_back(tensors[i]->reshape({-1}));
      }
      at::Tensor flat = at::cat(flat_parts);
      reduce(flat);
      int64_t offset = 0;
      for (size_t i = start; i < end; ++i) {
        at::Tensor& t = *tensors[i];
        t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
    start = end;
  }
}

}  // namespace

extern "C" {

typedef struct Group medmae_c10d_group;

void medmae_c10d_free_error(char* err) { std::free(err); }

char* medmae_c10d_group_create(const char* backend, const char* master_addr, uint16_t master_port, int rank,
                               int world_size, int64_t timeout_ms, medmae_c10d_group** out) {
  if (out == nullptr || backend == nullptr || master_addr == nullptr) {
    return dup_message("medmae_c10d_group_create: null argument");
  }
  *out = nullptr;
  const std::string addr(master_addr);
  const std::string where = addr + ":" + std::to_string(master_port);
  const std::string name(backend);
  const std::string what = "joining " + name + " group via store " + where;
  return guarded(what.c_str(), [&] {
    if (world_size < 1 || rank < 0 || rank >= world_size) {
      throw std::invalid_argument("rank " + std::to_string(rank) + " is outside world size " +
                                  std::to_string(world_size));
    }
    const std::chrono::milliseconds timeout(timeout_ms);
    // Under torchrun (torch >= 2.4) the elastic agent already serves a TCPStore on MASTER_ADDR:MASTER_PORT and
    // says so with TORCHELASTIC_USE_AGENT_STORE=True: then every rank is a client, and keys live under
    // "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>" so a restarted attempt never sees a previous attempt's keys
    // (the convention of torch.distributed's env:// rendezvous).
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    const bool agent_store = agent != nullptr && std::string(agent) == "True";
    c10d::TCPStoreOptions opts;
    opts.port = master_port;
    opts.isServer = rank == 0 && !agent_store;
    opts.numWorkers = static_cast<size_t>(world_size);
    // Our own join barrier below reports *which* ranks are missing, so the server does not block here.
    opts.waitWorkers = false;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(addr, opts);
    if (agent_store) {
      const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
      const std::string prefix = std::string("/worker/attempt_") + (attempt != nullptr ? attempt : "0");
      store = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    }
    join_barrier(*store, rank, world_size, timeout);

    auto group = std::make_unique<Group>();
    group->store = store;
    group->rank = rank;
    group->size = world_size;
    group->timeout = timeout;
    if (name == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(gloo_device(addr));
      group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
    } else if (name == "nccl") {
#ifdef MEDMAE_WITH_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, options);
#else
      throw std::invalid_argument("backend 'nccl' needs medmae-distributed built with the `nccl` feature");
#endif
    } else {
      throw std::invalid_argument("unknown backend '" + name + "' (expected gloo or nccl)");
    }
    *out = group.release();
  });
}

void medmae_c10d_group_destroy(medmae_c10d_group* group) { delete group; }

int medmae_c10d_group_rank(const medmae_c10d_group* group) { return group->rank; }

int medmae_c10d_group_size(const medmae_c10d_group* group) { return group->size; }

char* medmae_c10d_broadcast(medmae_c10d_group* group, void* const* tensors, size_t n, int root,
                            int64_t bucket_bytes) {
  return guarded("broadcast", [&] {
    if (root < 0 || root >= group->size) {
      throw std::invalid_argument("root rank " + std::to_string(root) + " is outside world size " +
                                  std::to_string(group->size));
    }
    std::vector<at::Tensor*> list;
    for (size_t i = 0; i < n; ++i) {
      list.push_back(&as_tensor(tensors[i], i));
    }
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    for_each_bucket(list, bucket_bytes, [&](at::Tensor& flat) {
      std::vector<at::Tensor> one{flat};
      wait_work(group->backend->broadcast(one, opts));
    });
  });
}

char* medmae_c10d_allreduce(medmae_c10d_group* group, void* const* tensors, size_t n, int average,
                            int64_t bucket_bytes) {
  return guarded("allreduce", [&] {
    std::vector<at::Tensor*> list;
    for (size_t i = 0; i < n; ++i) {
      at::Tensor& t = as_tensor(tensors[i], i);
      if (average != 0 && !at::isFloatingType(t.scalar_type())) {
        throw std::invalid_argument("tensor " + std::to_string(i) + " has dtype " +
                                    std::string(c10::toString(t.scalar_type())) +
                                    "; averaging needs a floating-point dtype");
      }
      list.push_back(&t);
    }
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;  // Gloo has no AVG: sum, then divide by the world size.
    opts.timeout = group->timeout;
    const double size = static_cast<double>(group->size);
    for_each_bucket(list, bucket_bytes, [&](at::Tensor& flat) {
      std::vector<at::Tensor> one{flat};
      wait_work(group->backend->allreduce(one, opts));
      if (average != 0) {
        flat.div_(size);
      }
    });
  });
}

char* medmae_c10d_barrier(medmae_c10d_group* group) {
  return guarded("barrier", [&] {
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    wait_work(group->backend->barrier(opts));
  });
}

}  // extern "C"
