// Pathfinder-32 (Long Range Arena, Tay et al. 2021; after Linsley et al. 2018, "Learning
// long-range spatial dependencies with horizontal gated recurrent units"): a 32x32 grey
// image of paths, each a chain of short dashes ("paddles") along a smooth curve, and two
// endpoint markers. Label 1: the markers sit at the two ends of one path; label 0: at one end
// each of two different paths. Flattened row-major: 1024 tokens, each the pixel intensity.
//
// Linsley's generator (snakes2; its defaults as recalled, not checked against the source
// here) draws, at 300x300, two target contours of `contour_length` paddles (LRA takes the
// hardest set, 14) of paddle_length 18 and paddle_margin 4 (the gap), with a bounded change
// of orientation between successive paddles, markers of radius 3 at the contour ends (both
// ends of one target for a positive, one end of each for a negative, so the two classes
// differ only in where the markers are), and distractor contours of contour_length / 3
// paddles. Here the same structure is scaled to 32x32 and a 1-pixel stroke, so that the
// ends of one path stay about an image width apart:
//   dash (paddle)      kDashLength = 3 pixels along its major axis (a Bresenham line)
//   gap                one empty pixel between successive dashes: their nearest pixels are
//                      at Chebyshev distance exactly kLinkDistance = 2 (= g)
//   turning angle      successive dashes turn by a uniform angle in [-kMaxTurnDegrees,
//                      +kMaxTurnDegrees] = [-30, 30] degrees; the first direction is uniform
//   paths              kTargetPaths = 2 targets of kTargetDashes = 8 dashes (~32 pixels)
//                      and kDistractors = 6 distractors of kDistractorDashes = 8 / 3 = 2
//   markers            a disc of radius kMarkerRadius = 1.5 (a filled 3x3 square) centred
//                      on the end pixel of a target path
//   intensities        background kBackground = 0, dashes and markers kInk = 255 (no
//                      antialiasing: a pixel is lit or not)
// Connectivity by construction (rejection and retry): a path grows from a random first dash
// at both ends; the nearest pixels of two successive dashes of a path are at Chebyshev
// distance exactly g = 2; any other two dashes, of one path or of two, are at Chebyshev
// distance >= r = kSeparation = 3 > g, and so is a marker from every other path. So a flood
// fill over lit pixels that joins pixels at Chebyshev distance <= 2 (a 5x5 neighbourhood)
// finds exactly the pixels of one path with its markers, and an 8-connected fill (distance
// 1) stops at every gap. Markers need room: an end that has none is retried with the path.
//
// Sample i of a split is a pure function of (seed, split, i), generated on demand (nothing
// stored; every rank can produce any sample), as in ListOps. Labels come in pairs: samples
// 2m and 2m+1 have opposite labels, which of them is positive drawn from (seed, split, m),
// so every aligned even-sized range of a split is exactly half positive.
#pragma once

#include <cstdint>

#include "data/dataset.h"

namespace primal {

class Pathfinder : public Dataset {
 public:
  static constexpr int kSide = 32;
  static constexpr int kPixels = kSide * kSide;  // tokens per sample
  static constexpr int kClasses = 2;
  static constexpr int kVocab = 256;

  static constexpr int kDashLength = 3;
  static constexpr int kLinkDistance = 2;  // g
  static constexpr int kSeparation = 3;    // r
  static constexpr double kMaxTurnDegrees = 30;
  static constexpr int kTargetPaths = 2;
  static constexpr int kTargetDashes = 8;
  static constexpr int kDistractors = 6;
  static constexpr int kDistractorDashes = kTargetDashes / 3;
  static constexpr double kMarkerRadius = 1.5;
  static constexpr uint8_t kBackground = 0;
  static constexpr uint8_t kInk = 255;

  // Throws primal::Error when a split size is not positive.
  Pathfinder(uint64_t seed, DataOrder order, int64_t train_size = 160000, int64_t val_size = 20000,
             int64_t test_size = 20000);

  // Sample `index` of `split`: writes kPixels intensities to image, returns the label (0/1).
  int sample(DataSplit split, int64_t index, uint8_t* image) const;

  // Tokens [B, kPixels] = intensities, lengths [B] = kPixels, targets [B] = the label.
  // Training sample k = step * global_batch + g is train sample k mod train_size (SEQUENTIAL)
  // or that position of epoch k / train_size's keyed permutation (RANDOM).
  void train_batch(int64_t step, int64_t first, int count, int global_batch,
                   Batch& batch) const override;
  int64_t eval_size(DataSplit split) const override;
  void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const override;

  int64_t train_index(int64_t k) const;

 private:
  uint64_t seed_;
  DataOrder order_;
  int64_t sizes_[3];
};

}  // namespace primal
