// The attention spectrum: LAPACK's singular values of constructed matrices, the rank of the
// kernel a PRIMAL layer induces, and `primal spectrum`'s CSV and SVG on a tiny model.
#include "trainer/spectrum.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"
#include "launch/spectrum.h"

namespace primal {
namespace {

namespace fs = std::filesystem;
using enum AttentionKind;

// Normalised singular values above 1e-6 (relative to the largest).
int numerical_rank(const std::vector<double>& normalised) {
  int r = 0;
  for (double v : normalised) r += v > 1e-6;
  return r;
}

std::vector<double> normalised(std::vector<double> sv) {
  const double largest = sv[0];
  for (double& v : sv) v /= largest;
  return sv;
}

TEST(Spectrum, KnownSingularValuesComeBackSortedFromLapack) {
  // A 3 x 4 matrix with orthogonal rows of lengths 2, 5 and 0.5: singular values 5, 2, 0.5.
  std::vector<double> a = {0, 2, 0, 0,  //
                           3, 0, 4, 0,  //
                           0, 0, 0, -0.5};
  const std::vector<double> sv = singular_values(a, 3, 4);
  ASSERT_EQ(sv.size(), 3u);
  EXPECT_NEAR(sv[0], 5.0, 1e-14);
  EXPECT_NEAR(sv[1], 2.0, 1e-14);
  EXPECT_NEAR(sv[2], 0.5, 1e-14);
}

TEST(Spectrum, RankRMatrixHasExactlyRNonzeroSingularValues) {
  // A = U V^T with U, V random n x r: exactly r values above 1e-6 of the largest, the rest below.
  std::mt19937 gen(11);
  std::normal_distribution<double> normal;
  const int n = 48;
  for (int r : {1, 2, 5, 17}) {
    std::vector<double> u(size_t(n) * r), v(size_t(n) * r), a(size_t(n) * n, 0.0);
    for (double& x : u) x = normal(gen);
    for (double& x : v) x = normal(gen);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        for (int k = 0; k < r; ++k)
          a[size_t(i) * n + j] += u[size_t(i) * r + k] * v[size_t(j) * r + k];
    const std::vector<double> sv = normalised(singular_values(a, n, n));
    EXPECT_EQ(numerical_rank(sv), r);
    EXPECT_GT(sv[r - 1], 1e-3) << "rank " << r;
    if (r < n) {
      EXPECT_LT(sv[r], 1e-12) << "rank " << r;
    }
  }
}

ModelConfig tiny(std::vector<AttentionKind> layers, HeadKind head) {
  ModelConfig c;
  c.head = head;
  c.vocab = 19;
  c.width = 16;
  c.heads = 2;  // d = 8
  c.mlp_width = 24;
  c.max_len = 24;
  c.low_rank = 3;
  c.rank_multi = 2;
  c.layers = std::move(layers);
  c.num_classes = 4;
  c.head_width = 8;
  c.seed = 5;
  return c;
}

// Random tokens; the validation split is `size` samples of N tokens, some padded (classifier).
class TinyData : public Dataset {
 public:
  TinyData(int N, int vocab, int64_t size, bool padded)
      : N_(N), vocab_(vocab), size_(size), padded_(padded) {}
  void train_batch(int64_t, int64_t first, int count, int, Batch& batch) const override {
    eval_batch(DataSplit::kTrain, first, count, batch);
  }
  int64_t eval_size(DataSplit) const override { return size_; }
  void eval_batch(DataSplit, int64_t first, int count, Batch& batch) const override {
    batch.B = count;
    batch.N = N_;
    batch.tokens.clear();
    batch.targets.clear();
    batch.lengths.clear();
    for (int b = 0; b < count; ++b) {
      uint64_t state = uint64_t(first + b) * 2654435761u + 1;
      for (int n = 0; n < N_; ++n) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        batch.tokens.push_back(int32_t((state >> 33) % vocab_));
        if (!padded_) batch.targets.push_back(int32_t((state >> 40) % vocab_));
      }
      if (padded_) {
        batch.targets.push_back(int32_t((first + b) % 4));
        batch.lengths.push_back(N_ - int32_t((first + b) % 3) * 3);
      }
    }
  }

 private:
  int N_, vocab_;
  int64_t size_;
  bool padded_;
};

TEST(Spectrum, PrimalKernelHasRankSAndSoftmaxIsFullRank) {
  // Causal LM, N = 20 > s = 3: each PRIMAL head's kernel phi(qbar) We Wr^T phi(kbar)^T has rank
  // 3; a causal softmax matrix is lower triangular with a positive diagonal: rank N.
  const int N = 20;
  Transformer<float> model(tiny({kPrimal, kSoftmax}, HeadKind::kLm));
  TinyData data(N, 19, 8, false);
  Batch batch;
  data.eval_batch(DataSplit::kVal, 0, 4, batch);
  Arena arena;
  model.forward(arena, batch, 0);

  const auto& softmax = dynamic_cast<const SoftmaxAttention<float>&>(model.layers()[1].attention());
  std::vector<double> m;
  softmax_attention_matrix(softmax, 2, 1, N, m);
  for (int i = 0; i < N; ++i) {
    double row = 0;
    for (int j = 0; j < N; ++j) row += m[size_t(i) * N + j];
    EXPECT_NEAR(row, 1.0, 1e-6) << "row " << i;
    for (int j = i + 1; j < N; ++j) EXPECT_EQ(m[size_t(i) * N + j], 0.0);  // causal
  }
  const auto& primal = dynamic_cast<const PrimalAttention<float>&>(model.layers()[0].attention());
  primal_kernel_matrix(primal, 1, 0, N, m);
  EXPECT_EQ(numerical_rank(normalised(singular_values(m, N, N))), 3);

  AttentionSpectrum spectrum(model);
  spectrum.add_last_forward(batch);
  ASSERT_EQ(spectrum.layers().size(), 2u);
  const LayerSpectrum& p = spectrum.layers()[0];
  const LayerSpectrum& s = spectrum.layers()[1];
  EXPECT_EQ(p.kind, kPrimal);
  EXPECT_EQ(s.kind, kSoftmax);
  ASSERT_EQ(p.size(), size_t(N));
  EXPECT_EQ(p.count[0], 4 * 2);  // samples x heads
  EXPECT_EQ(p.mean(0), 1.0);     // normalised by the largest
  for (int i = 0; i < N; ++i) {
    if (i < 3) {
      EXPECT_GT(p.mean(i), 1e-6) << i;
    } else {
      EXPECT_LT(p.mean(i), 1e-6) << i;
    }
    EXPECT_GT(s.mean(i), 1e-6) << i;
    if (i > 0) {
      EXPECT_LE(s.mean(i), s.mean(i - 1)) << i;
      EXPECT_LE(p.mean(i), p.mean(i - 1)) << i;
    }
  }
  // The mean over the 8 (sample, head) matrices of each one's values over its largest.
  std::vector<double> want(N, 0.0);
  for (int b = 0; b < 4; ++b)
    for (int h = 0; h < 2; ++h) {
      softmax_attention_matrix(softmax, b, h, N, m);
      const std::vector<double> sv = singular_values(m, N, N);
      for (int i = 0; i < N; ++i) want[i] += sv[i] / sv[0] / 8;
    }
  for (int i = 0; i < N; ++i) EXPECT_NEAR(s.mean(i), want[i], 1e-14) << i;
}

TEST(Spectrum, EncoderFormCountsEachSampleOverItsRealLength) {
  // Classifier, lengths 12, 9, 6, 12: index i counts the (sample, head) pairs with i < length.
  const int N = 12;
  Transformer<float> model(tiny({kSoftmax, kPrimal}, HeadKind::kClassifier));
  TinyData data(N, 19, 4, true);
  Batch batch;
  data.eval_batch(DataSplit::kVal, 0, 4, batch);
  Arena arena;
  model.forward(arena, batch, 0);
  AttentionSpectrum spectrum(model);
  spectrum.add_last_forward(batch);
  for (const LayerSpectrum& l : spectrum.layers()) {
    ASSERT_EQ(l.size(), size_t(N));
    EXPECT_EQ(l.count[0], 8);
    EXPECT_EQ(l.count[5], 8);
    EXPECT_EQ(l.count[6], 6);
    EXPECT_EQ(l.count[9], 4);
    EXPECT_EQ(l.count[11], 4);
  }
  // The encoder kernel phi(q) (Xs We) (Xs Wr)^T phi(k)^T also has rank s = 3.
  const LayerSpectrum& p = spectrum.layers()[1];
  EXPECT_GT(p.mean(2), 1e-6);
  EXPECT_LT(p.mean(3), 1e-6);
}

class SpectrumFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("primal_spectrum_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// What Python's XML parser makes of an SVG: "polylines=<n> legend=<text|text|...>", or the
// parse error; "" without python3.
std::string parse_svg(const std::string& path) {
  if (std::system("python3 -c 'import xml.etree.ElementTree' >/dev/null 2>&1") != 0) return "";
  const std::string out = path + ".parsed";
  const std::string cmd =
      "python3 -c \"import sys, xml.etree.ElementTree as ET\n"
      "ns = '{http://www.w3.org/2000/svg}'\n"
      "try:\n  root = ET.parse(sys.argv[1]).getroot()\n"
      "except ET.ParseError as e:\n  print('error', e); sys.exit(0)\n"
      "lines = root.findall('.//' + ns + 'polyline')\n"
      "texts = [t.text for g in root.iter(ns + 'g') if g.get('class') == 'legend'\n"
      "         for t in g.iter(ns + 'text')]\n"
      "print('root=%s polylines=%d legend=%s' % (root.tag == ns + 'svg', len(lines), "
      "'|'.join(texts)))\" " +
      path + " > " + out;
  if (std::system(cmd.c_str()) != 0) return "python3 failed";
  std::ifstream in(out);
  std::string line;
  std::getline(in, line);
  return line;
}

TEST_F(SpectrumFiles, RunSpectrumWritesTheCsvAndAWellFormedSvg) {
  const int N = 16;
  Transformer<float> model(tiny({kPrimal, kSoftmax, kPrimal}, HeadKind::kLm));
  TinyData data(N, 19, 10, false);
  const std::string prefix = (dir_ / "out" / "tiny").string();
  // Two batches of 4 samples: 8 of the 10.
  EXPECT_EQ(run_spectrum(model, data, 2, 4, prefix), 0);

  const std::vector<LayerSpectrum> csv = read_spectrum_csv(prefix + ".csv");
  ASSERT_EQ(csv.size(), 3u);
  std::ifstream in(prefix + ".csv");
  std::string header, first;
  std::getline(in, header);
  std::getline(in, first);
  EXPECT_EQ(header, "layer,kind,index,value");
  EXPECT_EQ(first, "0,PRIMAL,1,1.000000000e+00");
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(csv[l].layer, l);
    EXPECT_EQ(csv[l].kind, l == 1 ? kSoftmax : kPrimal);
    ASSERT_EQ(csv[l].size(), size_t(N));
    EXPECT_EQ(csv[l].mean(0), 1.0);
    // PRIMAL: s = 3 non-zero values.
    if (l != 1) {
      EXPECT_GT(csv[l].mean(2), 1e-6);
      EXPECT_LT(csv[l].mean(3), 1e-6);
    }
  }
  const std::string svg = parse_svg(prefix + ".svg");
  if (svg.empty()) GTEST_SKIP() << "python3 cannot be run to parse the SVG";
  EXPECT_EQ(svg,
            "root=True polylines=3 legend=layer 0 (PRIMAL)|layer 1 (SOFTMAX)|layer 2 (PRIMAL)");

  // Two runs in one plot.
  const std::string other = (dir_ / "out" / "other").string();
  Transformer<float> softmax_model(tiny({kSoftmax}, HeadKind::kLm));
  EXPECT_EQ(run_spectrum(softmax_model, data, 1, 3, other), 0);
  EXPECT_EQ(plot_spectrum_csvs({prefix + ".csv", other + ".csv"}, {"primal", "transformer"},
                               (dir_ / "both.svg").string(), "PRIMAL <vs> softmax & co"),
            0);
  EXPECT_EQ(parse_svg((dir_ / "both.svg").string()),
            "root=True polylines=4 legend=primal layer 0 (PRIMAL)|primal layer 1 (SOFTMAX)|"
            "primal layer 2 (PRIMAL)|transformer layer 0 (SOFTMAX)");
}

TEST_F(SpectrumFiles, BadArgumentsAndFilesAreErrors) {
  Transformer<float> model(tiny({kPrimal}, HeadKind::kLm));
  TinyData data(8, 19, 4, false);
  EXPECT_THROW(run_spectrum(model, data, 0, 4, (dir_ / "x").string()), Error);
  EXPECT_THROW(run_spectrum(model, data, 1, 0, (dir_ / "x").string()), Error);
  TinyData empty(8, 19, 0, false);
  EXPECT_THROW(run_spectrum(model, empty, 1, 4, (dir_ / "x").string()), Error);
  fs::create_directories(dir_);
  std::ofstream(dir_ / "bad.csv") << "layer,kind,index,value\n0,PRIMAL,2,0.5\n";
  try {
    read_spectrum_csv((dir_ / "bad.csv").string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace primal
