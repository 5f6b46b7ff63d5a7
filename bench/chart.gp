# bench/chart.gp -- bench/chart.png from the data bench/report.lua writes.
#   gnuplot -e "dir='CHARTDIR'; out='bench/chart.png'" bench/chart.gp
set terminal pngcairo size 1600,600 font ",10" noenhanced
set output out
load dir.'/series.gp'
set datafile missing "NaN"
set multiplot layout 1,2 title "poolrt side by side (one make bench run, loopback PostgreSQL 15, 2 cores)"

set title "pgbench -S (scale 10): transactions per second"
set logscale x 2
set xtics ("1" 1, "8" 8, "32" 32, "128" 128)
set xrange [0.8:160]
set yrange [0:*]
set xlabel "concurrent workers (W)"
set ylabel "TPS"
set key outside bottom center horizontal maxrows 5 font ",9"
set grid ytics
eval tps_plot

unset logscale x
unset xrange
set xtics autofreq
set key inside top right vertical
set title "Replica balance: transactions per server (light load, pool of 8 over 2 servers)"
set xlabel "pick policy, workers"
set ylabel "xact_commit delta"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
if (have_replica) {
  plot dir.'/replica.dat' using 2:xtic(1) title 'server 1', '' using 3 title 'server 2'
} else {
  set title "Replica balance: not run"
  plot 0 notitle
}
unset multiplot
