#include "cc/core/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

namespace lab {
namespace {
constexpr size_t kHuge = size_t{2} << 20;
}

PageBuffer::PageBuffer(size_t bytes, PageKind kind) : kind_(kind) {
  size_ = (bytes + kHuge - 1) / kHuge * kHuge;
  if (size_ == 0) size_ = kHuge;
  map_size_ = size_ + kHuge;  // room to align the start to 2 MiB
  map_ = mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw std::bad_alloc();
  }
  const uintptr_t a = (reinterpret_cast<uintptr_t>(map_) + kHuge - 1) & ~uintptr_t{kHuge - 1};
  data_ = reinterpret_cast<void*>(a);
  // Advice only: a kernel without THP refuses MADV_HUGEPAGE (EINVAL) and the buffer stays on 4 KiB pages.
  madvise(data_, size_, kind == PageKind::kHuge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

PageBuffer::~PageBuffer() {
  if (map_) munmap(map_, map_size_);
}

PageBuffer::PageBuffer(PageBuffer&& o) noexcept { *this = std::move(o); }

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    if (map_) munmap(map_, map_size_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    kind_ = o.kind_;
  }
  return *this;
}

double PageBuffer::HugeFraction() const {
  if (!data_) return -1;
  FILE* f = std::fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  // The mapping may have been split into several VMAs by madvise: sum AnonHugePages over every VMA
  // that lies inside [data_, data_ + size_).
  const uintptr_t lo = reinterpret_cast<uintptr_t>(data_), hi = lo + size_;
  char line[512];
  bool inside = false, any = false;
  double huge_kb = 0;
  while (std::fgets(line, sizeof(line), f)) {
    unsigned long a, b;
    char dash;
    if (std::sscanf(line, "%lx%c%lx", &a, &dash, &b) == 3 && dash == '-') {
      inside = a >= lo && b <= hi;
      continue;
    }
    unsigned long kb;
    if (inside && std::sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) huge_kb += kb, any = true;
  }
  std::fclose(f);
  return any ? huge_kb * 1024.0 / double(size_) : -1;
}

const char* PageKindName(PageKind k) { return k == PageKind::kHuge ? "2 MiB (THP)" : "4 KiB"; }

}  // namespace lab
