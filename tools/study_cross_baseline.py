import sys
from i2a_tf.study import statistics as s
rows = s.read_results_csv(sys.argv[1])
for variant, baseline in (("full", "supervised_global"), ("supervised", "supervised_global"),
                          ("logreg", "supervised_global"), ("full", "logreg")):
    d = [x[2] for x in s.paired_differences(rows, variant, 0.1, baseline)]
    lo, hi = s.bootstrap_interval(d)
    w, t, l = s.wins_ties_losses(d)
    worse3 = sum(x < -0.03 for x in d)
    print(f"{variant} - {baseline}: {100*sum(d)/len(d):+.1f} [{100*lo:+.1f}, {100*hi:+.1f}] "
          f"{w}/{t}/{l} over {len(d)} pairs; >3 points worse: {worse3}")
