"""SrvThreds operator: reconciles SrvThredsCluster resources into a running deployment."""
