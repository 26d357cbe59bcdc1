#include "data/pathfinder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>

#include "core/error.h"
#include "core/random.h"
#include "data/order.h"

namespace primal {
namespace {

constexpr int kSide = Pathfinder::kSide;
constexpr int kPixels = Pathfinder::kPixels;

// Retries: turns per dash end, attempts per path, attempts per image. At the chosen density
// an image takes about 1.05 attempts and its two targets about 25 path attempts in all
// (measured, docs/experiments.md), so running out means the parameters cannot be met.
constexpr int kDashTries = 8;
constexpr int kPathTries = 100;
constexpr int kImageTries = 10000;

// Draws uniforms in order from one counter-based stream: draw j is the Philox block at j.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t stream) : rng_(seed, stream) {}
  double uniform() { return rng_.uniform(counter_++); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  bool coin() { return uniform() < 0.5; }

 private:
  CounterRng rng_;
  uint64_t counter_ = 0;
};

enum MarkedEnds { kNoMarker = 0, kStartMarker = 1, kEndMarker = 2, kBothMarkers = 3 };

struct Pixel {
  int x, y;
};

// The per-pixel step along `angle`: one pixel along the major axis.
void step_along(double angle, double& dx, double& dy) {
  const double c = std::cos(angle), s = std::sin(angle);
  const double major = std::max(std::abs(c), std::abs(s));
  dx = c / major;
  dy = s / major;
}

// A Bresenham-like dash: kDashLength pixels, one step along the major axis each, so that its
// pixels are distinct and 8-connected.
struct Dash {
  double x, y, dx, dy;  // start point and per-pixel step, in pixel units
  double theta;
  Pixel pixels[Pathfinder::kDashLength];

  Dash(double x0, double y0, double angle) : x(x0), y(y0), theta(angle) {
    step_along(angle, dx, dy);
    for (int t = 0; t < Pathfinder::kDashLength; ++t) {
      pixels[t] = {int(std::floor(x + t * dx + 0.5)), int(std::floor(y + t * dy + 0.5))};
    }
  }
  // The start of the next dash, kLinkDistance steps past this one's last pixel along angle.
  Dash next(double angle) const {
    double next_dx, next_dy;
    step_along(angle, next_dx, next_dy);
    const double end_x = x + (Pathfinder::kDashLength - 1) * dx;
    const double end_y = y + (Pathfinder::kDashLength - 1) * dy;
    return Dash(end_x + Pathfinder::kLinkDistance * next_dx,
                end_y + Pathfinder::kLinkDistance * next_dy, angle);
  }
  // The same dash drawn from its other end (for growing a path backwards).
  Dash reversed() const {
    return Dash(x + (Pathfinder::kDashLength - 1) * dx, y + (Pathfinder::kDashLength - 1) * dy,
                theta + std::numbers::pi);
  }
};

bool inside(int x, int y) {
  return x >= 0 && y >= 0 && x < kSide && y < kSide;
}

// The image under construction: which dash (or marker) lit each pixel, and the path of each.
class Canvas {
 public:
  void clear() {
    std::memset(owner_, 0, sizeof owner_);
    next_id_ = 1;
    paths_ = 0;
  }

  // Draws a path of `dashes` dashes with markers on the ends in `marked` (kStartMarker,
  // kEndMarker). The path grows from its first dash at both ends, a random end at a time, and
  // only at the other once an end finds no place in kDashTries turns (so that a path about an
  // image wide fits more often than if it grew one way). Retries from a fresh first dash
  // while neither end can grow or a marker does not fit; false when every attempt failed
  // (the canvas is then as before).
  bool draw_path(Draws& draws, int dashes, int marked) {
    const int path = paths_++;
    const double turn = Pathfinder::kMaxTurnDegrees * std::numbers::pi / 180;
    const int length = Pathfinder::kDashLength;
    for (int attempt = 0; attempt < kPathTries; ++attempt) {
      const int first_id = next_id_;
      const Dash first(draws.uniform(0, kSide - 1), draws.uniform(0, kSide - 1),
                       draws.uniform(0, 2 * std::numbers::pi));
      if (!dash_fits(first, 0)) continue;
      stamp(first.pixels, length, path);
      // ends[0] grows forward from the first dash, ends[1] backward (the first dash reversed).
      Dash ends[2] = {first, first.reversed()};
      int links[2] = {first_id, first_id};
      bool stuck[2] = {false, false};
      int placed = 1;
      while (placed < dashes && !(stuck[0] && stuck[1])) {
        const int e = stuck[0] ? 1 : stuck[1] ? 0 : int(draws.coin());
        stuck[e] = true;
        for (int t = 0; t < kDashTries && stuck[e]; ++t) {
          const Dash d = ends[e].next(ends[e].theta + draws.uniform(-turn, turn));
          if (dash_fits(d, links[e])) {
            links[e] = next_id_;
            stamp(d.pixels, length, path);
            ends[e] = d;
            stuck[e] = false;
            ++placed;
          }
        }
      }
      if (placed == dashes &&
          (!(marked & kStartMarker) || draw_marker(ends[1].pixels[length - 1], path)) &&
          (!(marked & kEndMarker) || draw_marker(ends[0].pixels[length - 1], path))) {
        return true;
      }
      erase_from(first_id);
    }
    return false;
  }

  void paint(uint8_t* image) const {
    for (int p = 0; p < kPixels; ++p) {
      image[p] = owner_[p] ? Pathfinder::kInk : Pathfinder::kBackground;
    }
  }

 private:
  // A marker of `path` centred on c: a disc of kMarkerRadius, inside the image and at least
  // kSeparation from every other path. False (nothing drawn) when it does not fit.
  bool draw_marker(Pixel c, int path) {
    constexpr int reach = int(Pathfinder::kMarkerRadius);
    Pixel disc[(2 * reach + 1) * (2 * reach + 1)];
    int n = 0;
    for (int dy = -reach; dy <= reach; ++dy) {
      for (int dx = -reach; dx <= reach; ++dx) {
        if (dx * dx + dy * dy > Pathfinder::kMarkerRadius * Pathfinder::kMarkerRadius) continue;
        disc[n++] = {c.x + dx, c.y + dy};
      }
    }
    for (int i = 0; i < n; ++i) {
      if (!inside(disc[i].x, disc[i].y)) return false;
      bool clear = true;
      near(disc[i], [&](uint8_t id, int) { clear &= path_[id] == path; });
      if (!clear) return false;
    }
    stamp(disc, n, path);
    return true;
  }

  // Calls f(id, distance) for each lit pixel within Chebyshev distance kSeparation - 1 of p.
  template <typename F>
  void near(Pixel p, F f) const {
    constexpr int reach = Pathfinder::kSeparation - 1;
    for (int y = std::max(p.y - reach, 0); y <= std::min(p.y + reach, kSide - 1); ++y) {
      for (int x = std::max(p.x - reach, 0); x <= std::min(p.x + reach, kSide - 1); ++x) {
        const uint8_t id = owner_[y * kSide + x];
        if (id) f(id, std::max(std::abs(x - p.x), std::abs(y - p.y)));
      }
    }
  }

  // A dash fits when it lies inside the image, every lit pixel within kSeparation - 1 of it
  // belongs to the previous dash `link` (0: none) at distance exactly kLinkDistance, and
  // (with a previous dash) some pixel of it is at that distance.
  bool dash_fits(const Dash& d, int link) const {
    bool clear = true, linked = link == 0;
    for (const Pixel& p : d.pixels) {
      if (!inside(p.x, p.y)) return false;
      near(p, [&](uint8_t id, int distance) {
        const bool is_link = id == link && distance == Pathfinder::kLinkDistance;
        clear &= is_link;
        linked |= is_link;
      });
      if (!clear) return false;
    }
    return linked;
  }

  void stamp(const Pixel* pixels, int n, int path) {
    check(next_id_ < 256, "Pathfinder: too many dashes for the canvas");
    const uint8_t id = uint8_t(next_id_++);
    path_[id] = uint8_t(path);
    for (int i = 0; i < n; ++i) owner_[pixels[i].y * kSide + pixels[i].x] = id;
  }

  void erase_from(int first_id) {
    for (uint8_t& id : owner_) {
      if (id >= first_id) id = 0;
    }
    next_id_ = first_id;
  }

  uint8_t owner_[kPixels] = {};  // 0: background
  uint8_t path_[256] = {};
  int next_id_ = 1;
  int paths_ = 0;
};

struct SplitDomains {
  const char* sample;  // the stream of sample i
  const char* pair;    // the stream of pair m: which of samples 2m, 2m+1 is positive
};

SplitDomains split_domains(DataSplit split) {
  switch (split) {
    case DataSplit::kTrain:
      return {"pathfinder.train", "pathfinder.train.pair"};
    case DataSplit::kVal:
      return {"pathfinder.val", "pathfinder.val.pair"};
    case DataSplit::kTest:
      return {"pathfinder.test", "pathfinder.test.pair"};
  }
  return {"", ""};
}

// Rows i = 0..count-1 of batch: sample index(i) of split (the batch starts at sample `first`
// of its global batch or split). Tokens [count, kPixels], lengths [count] = kPixels.
template <typename Index>
void fill_batch(const Pathfinder& d, DataSplit split, int64_t first, int count, Batch& batch,
                Index index) {
  batch.start_classifier_tokens(count, kPixels);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) {
    uint8_t image[kPixels];
    batch.targets[size_t(i)] = d.sample(split, index(i), image);
    std::copy(image, image + kPixels, batch.tokens.begin() + ptrdiff_t(i) * kPixels);
  }
}

}  // namespace

Pathfinder::Pathfinder(uint64_t seed, DataOrder order, int64_t train_size, int64_t val_size,
                       int64_t test_size)
    : seed_(seed), order_(order), sizes_{train_size, val_size, test_size} {
  if (train_size <= 0 || val_size <= 0 || test_size <= 0) {
    throw Error("pathfinder", "split sizes must be positive (train " + std::to_string(train_size) +
                                  ", val " + std::to_string(val_size) + ", test " +
                                  std::to_string(test_size) + ")");
  }
}

// Two target paths with their markers, then the distractors; a fresh image when one does
// not fit. The markers sit on both ends of one target (label 1) or on one end of each (0).
int Pathfinder::sample(DataSplit split, int64_t index, uint8_t* image) const {
  check_eval_slice(index, 1, eval_size(split));
  const SplitDomains domains = split_domains(split);
  const bool even_positive =
      CounterRng(seed_, data_stream(domains.pair, uint64_t(index) / 2)).uniform(0) < 0.5;
  const int label = (index % 2 == 0) == even_positive ? 1 : 0;
  Draws draws(seed_, data_stream(domains.sample, uint64_t(index)));
  int marked[kTargetPaths];
  if (label == 1) {
    const int t = draws.coin() ? 1 : 0;
    marked[t] = kBothMarkers;
    marked[1 - t] = kNoMarker;
  } else {
    for (int& m : marked) m = draws.coin() ? kStartMarker : kEndMarker;
  }
  Canvas canvas;
  for (int attempt = 0; attempt < kImageTries; ++attempt) {
    canvas.clear();
    bool ok = true;
    for (int t = 0; t < kTargetPaths && ok; ++t) {
      ok = canvas.draw_path(draws, kTargetDashes, marked[t]);
    }
    for (int k = 0; k < kDistractors && ok; ++k) {
      ok = canvas.draw_path(draws, kDistractorDashes, kNoMarker);
    }
    if (!ok) continue;
    canvas.paint(image);
    return label;
  }
  throw Error("pathfinder", "no image with " + std::to_string(kTargetPaths + kDistractors) +
                                " separated paths in " + std::to_string(kImageTries) + " attempts");
}

int64_t Pathfinder::train_index(int64_t k) const {
  return int64_t(epoch_sample(order_, seed_, "pathfinder.epoch", uint64_t(k), uint64_t(sizes_[0])));
}

int64_t Pathfinder::eval_size(DataSplit split) const {
  return sizes_[int(split)];
}

void Pathfinder::train_batch(int64_t step, int64_t first, int count, int global_batch,
                             Batch& batch) const {
  check_train_slice(step, first, count, global_batch);
  fill_batch(*this, DataSplit::kTrain, first, count, batch,
             [&](int i) { return train_index(step * global_batch + first + i); });
}

void Pathfinder::eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const {
  check_eval_slice(first, count, eval_size(split));
  fill_batch(*this, split, first, count, batch, [&](int i) { return first + i; });
}

}  // namespace primal
