// PageBuffer: an anonymous allocation for data that is streamed every token, on 2 MiB pages if asked.
//
// Why: decode reads every weight once per token. On 4 KiB pages that is one page-table walk per
// 4 KiB read (the TLB holds a few thousand entries, a few MiB of reach, against hundreds of MiB of
// weights), and under virtualization each walk is two-dimensional (guest and host tables). On 2 MiB
// pages the same bytes need 512x fewer walks. Transparent huge pages (THP) give them without root:
// the buffer is 2 MiB-aligned and madvise(MADV_HUGEPAGE)'d before its first touch; where THP is off
// ("never") the kernel silently keeps 4 KiB pages, which HugeFraction() reports.
#pragma once
#include <cstddef>

namespace lab {

enum class PageKind {
  kHuge,   // madvise(MADV_HUGEPAGE): 2 MiB pages where the kernel allows THP
  kSmall,  // madvise(MADV_NOHUGEPAGE): 4 KiB pages even where THP is "always" (the comparison)
};

class PageBuffer {
 public:
  PageBuffer() = default;
  // Reserves `bytes` (rounded up to 2 MiB), anonymous, read-write, not yet touched. Throws
  // std::bad_alloc when the mapping fails.
  PageBuffer(size_t bytes, PageKind kind);
  ~PageBuffer();
  PageBuffer(PageBuffer&& o) noexcept;
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  PageKind kind() const { return kind_; }
  // Share of the buffer's bytes the kernel backs with huge pages now (AnonHugePages of its mapping in
  // /proc/self/smaps); -1 if that cannot be read. Meaningful after the buffer has been touched.
  double HugeFraction() const;

 private:
  void* map_ = nullptr;  // the mapping (data_ rounded up to 2 MiB inside it)
  size_t map_size_ = 0;
  void* data_ = nullptr;
  size_t size_ = 0;
  PageKind kind_ = PageKind::kSmall;
};

const char* PageKindName(PageKind k);  // "2 MiB (THP)" or "4 KiB"

}  // namespace lab
