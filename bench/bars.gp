# Clustered bars, godwit beside QEMU per scenario, median with min..max
# whiskers and the median written above, log scale. Variables (gnuplot -e):
# data, out, ylab, plottitle; t1 and t2, the two series' titles (default
# godwit and QEMU 7.2). data: "label" g_median g_min g_max q_median
# q_min q_max, NaN where a VMM has no figure ("\n" in a label breaks it).
if (!exists("t1")) t1 = "godwit"
if (!exists("t2")) t2 = "QEMU 7.2"
set terminal pngcairo size 960,520 font "sans,10"
set output out
set title plottitle
set ylabel ylab
set logscale y
set format y "%g"
set grid ytics
set key top left
set bmargin 5
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics nomirror font "sans,9"
set datafile missing NaN
label(v) = v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : sprintf("%.2g", v)
plot data using 2:3:4:xtic(1) title t1 linecolor rgb "#1f77b4", \
     ''   using 5:6:7 title t2 linecolor rgb "#d62728", \
     ''   using ($0 - 1/6.):($4):(label($2)) with labels offset 0,0.6 font "sans,8" notitle, \
     ''   using ($0 + 1/6.):($7):(label($5)) with labels offset 0,0.6 font "sans,8" notitle
